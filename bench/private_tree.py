"""A private actors-only tree for one sweep point, against the bench's MariaDB and Redis.

A sweep changes settings that are read when processes start (worker counts, the
MySQL budget, each db_worker's pool), so every point gets a tree of its own: the
repository's supervisord.conf with the environment of scripts/env.sh, but a
temporary USERHUB_VAR, free ports for the pool manager and the gateways, its own
PROMETHEUS_MULTIPROC_DIR (so /metrics shows only this tree) and
USERHUB_START_MYSQL/REDIS=false, pointed at the DSN and URL the benchmark itself
uses. The tree `make run` started is never touched. On exit the tree is shut down
through its own socket, with bounded waits and a kill as the last resort, and its
directory is removed: nothing is left running.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from actors.runtime.config import parse_addr
from actors.wire import messages
from actors.wire.client import Connection

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
CONF = ROOT / "supervisord.conf"

# What makes one tree distinct from another; everything else (timeouts, session
# policy, ...) is inherited from the benchmark's environment.
_TREE_KEYS = (
    "USERHUB_VAR",
    "USERHUB_MANAGER_ADDR",
    "USERHUB_HTTP_ADDR",
    "USERHUB_START_MYSQL",
    "USERHUB_START_REDIS",
    "USERHUB_GATEWAYS",
    "USERHUB_CACHE_WORKERS",
    "USERHUB_DB_WORKERS",
    "USERHUB_MYSQL_BUDGET",
    "USERHUB_DB_POOL_SIZE",
    "USERHUB_HASH_THREADS",
    "PROMETHEUS_MULTIPROC_DIR",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Shape:
    """One sweep point's process counts and MySQL pool.

    ``pool`` is the total MySQL pool of the tree, the seed's "pool size": the pool
    manager's budget, split evenly (rounded up) among the db_workers.
    """

    gateways: int
    cache_workers: int
    db_workers: int
    pool: int

    @property
    def pool_per_db_worker(self) -> int:
        return math.ceil(self.pool / self.db_workers)

    def settings(self) -> dict[str, int]:
        return {
            "gateways": self.gateways,
            "cache_workers": self.cache_workers,
            "db_workers": self.db_workers,
            "pool_size": self.pool,
            "mysql_budget": self.pool,
            "db_pool_size": self.pool_per_db_worker,
        }


def tree_env(base: dict[str, str], var: Path, shape: Shape) -> dict[str, str]:
    """scripts/env.sh's environment for an actors-only tree in ``var``."""
    env = {k: v for k, v in base.items() if k not in _TREE_KEYS}
    env.update(
        USERHUB_VAR=str(var),
        USERHUB_START_MYSQL="false",
        USERHUB_START_REDIS="false",
        USERHUB_MYSQL_DSN=base["USERHUB_MYSQL_DSN"],
        USERHUB_REDIS_URL=base["USERHUB_REDIS_URL"],
        USERHUB_MANAGER_ADDR=f"127.0.0.1:{free_port()}",
        USERHUB_HTTP_ADDR=f"127.0.0.1:{free_port()}",
        USERHUB_GATEWAYS=str(shape.gateways),
        USERHUB_CACHE_WORKERS=str(shape.cache_workers),
        USERHUB_DB_WORKERS=str(shape.db_workers),
        USERHUB_MYSQL_BUDGET=str(shape.pool),
        USERHUB_DB_POOL_SIZE=str(shape.pool_per_db_worker),
        PROMETHEUS_MULTIPROC_DIR=str(var / "metrics"),
    )
    return env_sh(env)


def env_sh(env: dict[str, str]) -> dict[str, str]:
    """``env`` completed by scripts/env.sh, the one place every default is set."""
    out = subprocess.run(
        ["bash", "-c", ". scripts/env.sh && env -0"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    ).stdout
    return dict(item.split("=", 1) for item in out.decode().split("\0") if "=" in item)


@dataclass
class PrivateTree:
    """A running actors-only tree: its addresses, and how it started."""

    var: Path
    env: dict[str, str]
    shape: Shape
    supervisord: subprocess.Popen[bytes] | None = None
    child_pids: list[int] = field(default_factory=list)
    ready_seconds: float = math.nan
    stop_seconds: float = math.nan

    @property
    def http(self) -> tuple[str, int]:
        return parse_addr(self.env["USERHUB_HTTP_ADDR"])

    @property
    def metrics_url(self) -> str:
        host, port = self.http
        return f"http://{host}:{port}/metrics"

    def ctl(self, *args: str, timeout: float = 30) -> str:
        done = subprocess.run(
            [str(VENV_BIN / "supervisorctl"), "-c", str(CONF),
             "-s", f"unix://{self.var}/run/supervisor.sock", *args],
            env=self.env, capture_output=True, timeout=timeout, check=False,
        )  # fmt: skip
        return done.stdout.decode()

    def workers(self) -> messages.WorkerList:
        return asyncio.run(self._workers())

    async def _workers(self) -> messages.WorkerList:
        conn = await Connection.open(*parse_addr(self.env["USERHUB_MANAGER_ADDR"]), timeout=2)
        try:
            reply = await conn.call(messages.ListWorkers(""), deadline=time.time() + 2, trace_id="")
        finally:
            conn.close()
        return reply

    def _readyz(self) -> bool:
        host, port = self.http
        try:
            with urllib.request.urlopen(f"http://{host}:{port}/readyz", timeout=2) as r:
                return bool(json.load(r)["ready"])
        except (OSError, ValueError, KeyError):
            return False

    def _all_ready(self) -> bool:
        """Every worker of the shape registered and ready, and the gateways say ready.

        /readyz answers for whichever gateway the kernel picked, so it is asked on
        several fresh connections; the pool manager's list covers the workers.
        """
        try:
            listed = self.workers().workers
        except Exception:  # not listening yet, or not answering yet: ask again
            return False
        ready = [w for w in listed if w.ready]
        if sum(w.kind == "db_worker" for w in ready) < self.shape.db_workers:
            return False
        if sum(w.kind == "cache_worker" for w in ready) < self.shape.cache_workers:
            return False
        return all(self._readyz() for _ in range(3 * self.shape.gateways))

    def start(self, timeout: float = 60) -> None:
        for sub in ("log", "run", "avatars", "metrics"):
            (self.var / sub).mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        self.supervisord = subprocess.Popen(
            [str(VENV_BIN / "supervisord"), "-n", "-c", str(CONF)],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = started + timeout
        while not self._all_ready():
            if self.supervisord.poll() is not None:
                raise RuntimeError(f"supervisord exited with {self.supervisord.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"private tree {self.shape} not ready in {timeout} s")
            time.sleep(0.2)
        self.ready_seconds = round(time.monotonic() - started, 2)
        self.child_pids = [int(p) for p in self.ctl("pid", "all").split() if p.isdigit()]

    def stop(self, timeout: float = 30) -> None:
        """supervisorctl shutdown, a bounded wait, then kill whatever is left."""
        proc = self.supervisord
        if proc is None:
            return
        started = time.monotonic()
        clean = True
        if proc.poll() is None:
            try:
                said = self.ctl("shutdown", timeout=10)
            except subprocess.TimeoutExpired:
                said = ""
            if "Shut down" not in said.splitlines():
                # Its socket was not up yet (or not answering): SIGTERM means the same.
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                clean = False
                proc.kill()
                proc.wait(timeout=10)
        if not clean:
            # supervisord puts each program in a process group of its own.
            for pid in self.child_pids:
                if self._ours(pid):
                    os.killpg(pid, signal.SIGKILL)
        self.supervisord = None
        self.stop_seconds = round(time.monotonic() - started, 2)

    def _ours(self, pid: int) -> bool:
        """Still alive and still this tree's (a pid may have been reused since)."""
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            return False
        return f"USERHUB_VAR={self.var}".encode() in environ


@contextmanager
def private_tree(shape: Shape, base_env: dict[str, str] | None = None) -> Iterator[PrivateTree]:
    """Start a tree of ``shape`` against the DSN and URL of ``base_env`` (os.environ)."""
    var = Path(tempfile.mkdtemp(prefix="uh-sweep-", dir="/tmp"))
    tree = PrivateTree(var, tree_env(dict(base_env or os.environ), var, shape), shape)
    try:
        tree.start()
        yield tree
    finally:
        try:
            tree.stop()
        finally:
            keep = os.environ.get("USERHUB_KEEP_SWEEP_LOGS")
            if keep:
                shutil.copytree(var / "log", Path(keep) / var.name, dirs_exist_ok=True)
            shutil.rmtree(var, ignore_errors=True)
