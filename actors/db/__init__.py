"""The db_worker's side: the SQL userhub runs, the MySQL pool, password hashing.

Runs only in db_worker processes, the only ones that touch MySQL.
"""
