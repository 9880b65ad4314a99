"""userhub actors: gateway, pool manager, db workers and cache workers.

Each actor is its own OS process; they talk only over the frame protocol in
:mod:`actors.protocol`, carrying the typed messages of :mod:`actors.messages`.
"""
