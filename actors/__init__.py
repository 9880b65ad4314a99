"""userhub's actors: gateway, pool manager, db workers and cache workers.

Each actor is its own OS process, started as ``python -m actors.<kind>``; they talk
only over the frame protocol of :mod:`actors.wire`. The packages say where a line
runs: ``wire`` and ``runtime`` in every actor, ``web`` in gateways, ``db`` in
db_workers, ``cache`` in cache_workers, ``manager`` in the pool manager, and
``rules`` wherever input is checked. docs/architecture.md draws the map.
"""
