"""Per-stage latency from two Prometheus scrapes: what happened between them.

The gateways' /metrics (on the admin listener, USERHUB_ADMIN_ADDR) sums every
process on the host; the difference of two scrapes' histogram buckets is the
distribution of one benchmark phase, and its quantiles are read by linear
interpolation inside a bucket, as Prometheus' histogram_quantile does.
"""

from __future__ import annotations

import math
import re
import urllib.request
from collections import defaultdict

# seed stage name -> (metric, label filter)
STAGES: dict[str, tuple[str, dict[str, str]]] = {
    "round trip (gateway)": ("userhub_http_request_seconds", {}),
    "get connection": ("userhub_get_connection_seconds", {}),
    "get connection (MySQL pool)": ("userhub_mysql_acquire_seconds", {}),
    "send message": ("userhub_send_message_seconds", {}),
    "free connection": ("userhub_free_connection_seconds", {}),
    "DB get user": ("userhub_db_query_seconds", {"stage": "get_user"}),
    "DB session write": ("userhub_db_query_seconds", {"stage": "session_write"}),
    "DB update user": ("userhub_db_query_seconds", {"stage": "update_user"}),
    "cache hit": ("userhub_cache_seconds", {"stage": "hit"}),
    "cache miss": ("userhub_cache_seconds", {"stage": "miss"}),
    "cache write": ("userhub_cache_seconds", {"stage": "write"}),
    "argon2 verify": ("userhub_password_hash_seconds", {"op": "verify"}),
}

_LINE = re.compile(r"^(\w+)_bucket\{(.*)\} ([0-9.eE+-]+|NaN)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

Buckets = dict[float, float]  # upper bound -> cumulative count
Scrape = dict[str, list[tuple[dict[str, str], float, float]]]  # metric -> (labels, le, count)


def scrape(url: str) -> Scrape:
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    out: dict[str, list[tuple[dict[str, str], float, float]]] = defaultdict(list)
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        labels = dict(_LABEL.findall(m.group(2)))
        le = labels.pop("le")
        out[m.group(1)].append((labels, float(le), float(m.group(3))))
    return out


def _collect(samples: Scrape, metric: str, want: dict[str, str]) -> Buckets:
    buckets: Buckets = defaultdict(float)
    for labels, le, count in samples.get(metric, []):
        if all(labels.get(k) == v for k, v in want.items()):
            buckets[le] += count
    return dict(buckets)


def quantile(q: float, buckets: Buckets) -> float:
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return math.nan
    total = buckets[bounds[-1]]
    rank = q * total
    lower, prev = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower
            inside = count - prev
            return lower + (bound - lower) * ((rank - prev) / inside if inside else 0)
        lower, prev = bound, count
    return lower


def phase(before: Scrape, after: Scrape) -> dict[str, dict[str, float]]:
    """Count, p50 and p99 (ms) of each stage between two scrapes."""
    out: dict[str, dict[str, float]] = {}
    for stage, (metric, want) in STAGES.items():
        b, a = _collect(before, metric, want), _collect(after, metric, want)
        delta = {le: a.get(le, 0.0) - b.get(le, 0.0) for le in a}
        count = delta.get(float("inf"), 0.0)
        if count <= 0:
            continue
        out[stage] = {
            "count": count,
            "p50_ms": round(quantile(0.5, delta) * 1000, 3),
            "p99_ms": round(quantile(0.99, delta) * 1000, 3),
        }
    return out
