"""The gateway's side: the JSON API, the HTML pages and the picture store.

Runs only in gateway processes (aiohttp). It reaches the database and the cache
only through calls to leased workers, never by importing their packages.
"""
