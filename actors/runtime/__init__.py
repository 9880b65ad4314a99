"""What every actor process runs around its own work.

Configuration, process start and stop, JSON logs, metrics, a worker's registration
with the pool manager and a client's leases on workers. Runs in every actor.
"""
