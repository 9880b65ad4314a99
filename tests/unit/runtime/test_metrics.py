"""Metric names and buckets, and multiprocess mode across real processes that come and go."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.parser import text_string_to_metric_families

from actors.runtime import metrics

ROOT = Path(__file__).resolve().parents[3]


def all_metrics() -> list[Counter | Gauge | Histogram]:
    return [m for m in vars(metrics).values() if isinstance(m, (Counter, Gauge, Histogram))]


def test_names_follow_prometheus_conventions() -> None:
    found = all_metrics()
    assert len(found) >= 15
    for metric in found:
        [family] = metric.describe()
        assert family.name.startswith("userhub_"), family.name
        if isinstance(metric, Histogram):
            assert family.name.endswith("_seconds"), family.name
        if isinstance(metric, Counter):
            assert family.name.endswith("_total") or family.type == "counter"
        # Unbounded label values (ids, users, pids) would explode the series count.
        for label in metric._labelnames:
            assert label in {"route", "status", "caller", "kind", "message", "stage",
                             "result", "op", "actor", "code", "pool"}, label  # fmt: skip


def test_buckets_resolve_a_p99_between_half_a_millisecond_and_a_second() -> None:
    buckets = list(metrics.BUCKETS)
    assert buckets == sorted(buckets)
    assert 0.0005 in buckets and 1.0 in buckets
    inside = [b for b in buckets if 0.0005 <= b <= 1.0]
    assert all(b / a <= 1.67 for a, b in itertools.pairwise(inside))


def test_a_zombie_is_not_alive() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        for _ in range(100):
            if not metrics.pid_alive(child.pid):
                break  # exited, not reaped yet: a zombie
            subprocess.run(["sleep", "0.05"])
        assert not metrics.pid_alive(child.pid)
    finally:
        child.wait()
    assert metrics.pid_alive(os.getpid())


# What an actor does with its metrics, in a child process of its own. It waits for a
# line on stdin before it starts, so the test can plant files under its pid first.
ACTOR = textwrap.dedent(
    """
    import sys
    sys.stdin.readline()
    from actors.runtime import metrics
    metrics.started("db_worker")
    metrics.POOL_SIZE.labels("db_worker", "mysql").inc(8)
    metrics.DB_QUERY_SECONDS.labels("get_user").observe(0.002)
    metrics.DB_QUERY_SECONDS.labels("get_user").observe(0.2)
    print("ready", flush=True)
    sys.stdin.readline()
    """
)


class Actor:
    def __init__(self, directory: Path) -> None:
        env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(directory), PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", ACTOR],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.pid = self.proc.pid

    def start(self) -> None:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "ready"

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.kill()


def scrape(directory: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, float]:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics.scrape().decode()):
        for s in family.samples:
            key = s.name + "{" + ",".join(f"{k}={v}" for k, v in sorted(s.labels.items())) + "}"
            samples[key] = s.value
    return samples


def test_dead_processes_keep_their_counts_but_not_their_gauges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = Actor(tmp_path), Actor(tmp_path)
    try:
        first.start()
        second.start()
        before = scrape(tmp_path, monkeypatch)
        assert before["userhub_pool_connections{actor=db_worker,pool=mysql}"] == 16
        assert before["userhub_process_starts_total{actor=db_worker}"] == 2

        first.kill()  # kill -9: no chance to tidy up
        after = scrape(tmp_path, monkeypatch)  # the scrape itself drops its live gauges
        assert after["userhub_pool_connections{actor=db_worker,pool=mysql}"] == 8
        assert not list(tmp_path.glob(f"gauge_live*_{first.pid}.db"))
        # What the dead process counted happened: it stays, once.
        assert after["userhub_process_starts_total{actor=db_worker}"] == 2
        assert after["userhub_db_query_seconds_count{stage=get_user}"] == 4
        assert after["userhub_db_query_seconds_bucket{le=0.002,stage=get_user}"] == 2
        assert after["userhub_db_query_seconds_bucket{le=0.2,stage=get_user}"] == 4
        assert after["userhub_db_query_seconds_sum{stage=get_user}"] == pytest.approx(0.404)
    finally:
        first.stop()
        second.stop()


def test_a_reused_pid_does_not_inherit_a_dead_process_gauges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = Actor(tmp_path)
    dead.start()
    dead.kill()
    reborn = Actor(tmp_path)
    try:
        # Pretend the dead process had the new one's pid, as after a pid wrap-around.
        for path in tmp_path.glob(f"*_{dead.pid}.db"):
            path.rename(tmp_path / path.name.replace(str(dead.pid), str(reborn.pid)))
        reborn.start()
        samples = scrape(tmp_path, monkeypatch)
        assert samples["userhub_pool_connections{actor=db_worker,pool=mysql}"] == 8
        # Counters in the reused file carry on from where they were: still no double count.
        assert samples["userhub_process_starts_total{actor=db_worker}"] == 2
    finally:
        reborn.stop()
