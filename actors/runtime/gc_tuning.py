"""Garbage-collector settings for long-running actors.

An actor allocates many short-lived objects per request and keeps a large, stable
heap (modules, pools, caches). With CPython's default thresholds the collector runs
every 700 allocations and now and then walks the whole heap, which shows up as
multi-millisecond pauses in the latency tail. Freezing the start-up heap takes it
out of every later collection, and a higher first threshold makes young-generation
collections rarer; reference counting still frees almost everything at once.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000


def tune_after_start() -> None:
    """Call once the actor has imported and built what it keeps for its lifetime."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
