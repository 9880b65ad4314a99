"""The pool manager's side: the registry of live workers and their leases.

Runs only in the pool manager process.
"""
