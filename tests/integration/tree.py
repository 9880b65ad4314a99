"""A real userhub tree for integration tests: MariaDB, Redis and actor processes.

It runs the repository's own supervisord.conf with the environment of
scripts/env.sh, but in a temporary directory and on free ports, so it never touches
a tree started with `make run`.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from actors.wire import messages
from actors.wire.client import Connection
from bench.private_tree import env_sh

ROOT = Path(__file__).resolve().parents[2]
PYTHON = str(ROOT / ".venv" / "bin" / "python")
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(
    predicate: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1
) -> T:
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:
            last_exc = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out waiting for {what} (last error: {last_exc!r})")


def tree_env(var: Path, **overrides: str) -> dict[str, str]:
    """The environment scripts/env.sh computes, for a tree living in ``var``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("USERHUB_")}
    base.pop("PROMETHEUS_MULTIPROC_DIR", None)
    base.update(
        USERHUB_VAR=str(var),
        USERHUB_MYSQL_PORT=str(free_port()),
        USERHUB_REDIS_PORT=str(free_port()),
        USERHUB_MANAGER_ADDR=f"127.0.0.1:{free_port()}",
        USERHUB_HTTP_ADDR=f"127.0.0.1:{free_port()}",
        USERHUB_INNODB_BUFFER_POOL="128M",
        USERHUB_REDIS_MAXMEMORY="256mb",
        USERHUB_DB_POOL_SIZE="8",
        # Every test client is 127.0.0.1 and the failed-login counts are shared by the
        # gateways: the per-address limit would otherwise couple unrelated tests.
        USERHUB_LOGIN_MAX_FAILURES_ADDRESS="10000",
    )
    base.update(overrides)
    return env_sh(base)


class Tree:
    """Handle on a running tree: addresses, supervisorctl, the pool manager."""

    def __init__(self, var: Path, env: dict[str, str]) -> None:
        self.var = var
        self.env = env
        self.base_url = f"http://{env['USERHUB_HTTP_ADDR']}"
        host, port = env["USERHUB_MANAGER_ADDR"].rsplit(":", 1)
        self.manager_addr = (host, int(port))
        self.supervisord: subprocess.Popen[bytes] | None = None
        self.extra: list[subprocess.Popen[bytes]] = []

    # -- control ------------------------------------------------------------------

    def ctl(self, *args: str, check: bool = False) -> str:
        sock = f"unix://{self.var}/run/supervisor.sock"
        done = subprocess.run(
            [str(ROOT / ".venv/bin/supervisorctl"), "-c", str(ROOT / "supervisord.conf"),
             "-s", sock, *args],
            env=self.env, capture_output=True, timeout=60, check=check,
        )  # fmt: skip
        return done.stdout.decode()

    def status(self) -> dict[str, tuple[str, int]]:
        """program name -> (state, pid)"""
        out: dict[str, tuple[str, int]] = {}
        for line in self.ctl("status").splitlines():
            parts = line.split()
            if len(parts) >= 2:
                pid = int(parts[3].rstrip(",")) if len(parts) > 3 and parts[2] == "pid" else 0
                out[parts[0]] = (parts[1], pid)
        return out

    def pid(self, name: str) -> int:
        state, pid = self.status()[name]
        assert state == "RUNNING", f"{name} is {state}"
        return pid

    def kill9(self, name: str) -> int:
        pid = self.pid(name)
        os.kill(pid, signal.SIGKILL)
        return pid

    def wait_restarted(self, name: str, old_pid: int, timeout: float = 15) -> int:
        def new_pid() -> int:
            state, pid = self.status()[name]
            return pid if state == "RUNNING" and pid != old_pid else 0

        return int(wait_until(new_pid, timeout, f"{name} to come back"))

    def workers(self, kind: str = "") -> messages.WorkerList:
        """The pool manager's view, asked from a thread of its own (callers may be async)."""
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, self._workers(kind)).result(timeout=10)

    async def _workers(self, kind: str) -> messages.WorkerList:
        conn = await Connection.open(*self.manager_addr, timeout=2)
        try:
            reply = await conn.call(
                messages.ListWorkers(kind), deadline=time.time() + 2, trace_id=""
            )
        finally:
            conn.close()
        assert isinstance(reply, messages.WorkerList)
        return reply

    def ready(self, base_url: str | None = None) -> bool:
        try:
            with urllib.request.urlopen(f"{base_url or self.base_url}/readyz", timeout=2) as r:
                return bool(json.load(r)["ready"])
        except OSError:
            return False

    def start_gateway(self) -> str:
        """One more gateway process on a port of its own (outside supervisord)."""
        addr = f"127.0.0.1:{free_port()}"
        env = dict(self.env, USERHUB_HTTP_ADDR=addr)
        log = open(self.var / "log" / f"extra_gateway_{len(self.extra)}.log", "ab")
        proc = subprocess.Popen(
            [PYTHON, "-m", "actors.gateway"], cwd=ROOT, env=env, stdout=log, stderr=log
        )
        self.extra.append(proc)
        url = f"http://{addr}"
        wait_until(lambda: self.ready(url), 20, f"extra gateway {addr}")
        return url

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        for sub in ("log", "run", "redis", "avatars", "metrics"):
            (self.var / sub).mkdir(parents=True, exist_ok=True)
        subprocess.run([PYTHON, "-m", "tools.dbsetup", "init"], cwd=ROOT, env=self.env, check=True)
        self.supervisord = subprocess.Popen(
            [str(ROOT / ".venv/bin/supervisord"), "-n", "-c", str(ROOT / "supervisord.conf")],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        subprocess.run(
            [PYTHON, "-m", "tools.dbsetup", "bootstrap"],
            cwd=ROOT,
            env=self.env,
            check=True,
            timeout=120,
        )
        wait_until(self.ready, 60, "the tree to be ready", interval=0.25)

    def stop(self) -> None:
        for proc in self.extra:
            proc.terminate()
        for proc in self.extra:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        if self.supervisord is not None:
            self.supervisord.send_signal(signal.SIGTERM)
            try:
                self.supervisord.wait(timeout=90)
            except subprocess.TimeoutExpired:
                self.supervisord.kill()


@contextmanager
def running_tree(**overrides: str) -> Iterator[Tree]:
    var = Path(tempfile.mkdtemp(prefix="uh-", dir="/tmp"))
    tree = Tree(var, tree_env(var, **overrides))
    try:
        tree.start()
        yield tree
    finally:
        tree.stop()
        keep = os.environ.get("USERHUB_KEEP_TEST_VAR")
        if keep:
            shutil.copytree(var / "log", Path(keep) / var.name, dirs_exist_ok=True)
        shutil.rmtree(var, ignore_errors=True)
