"""The cache_worker's side: profiles, sessions and login counters in Redis.

Runs only in cache_worker processes, the only ones that touch Redis.
"""
