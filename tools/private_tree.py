"""One private-tree harness for the tests, the benchmark sweeps and chaos runs.

A private tree is the repository's own supervisord.conf with the environment of
scripts/env.sh, but in a temporary USERHUB_VAR and on free ports, so the tree
`make run` started is never touched. It comes in two kinds:

* with servers of its own (the tests', chaos's): a private MariaDB and Redis on
  free ports as well, sized for a test; every other setting is the default,
  whatever the caller's environment says, so a test sees what a newcomer sees;
* actors only (the benchmark sweeps'): pool manager, workers and gateways against
  the MariaDB and Redis of the caller's environment, whose settings it inherits
  except those that size or place a tree (_TREE_KEYS).

Either way the tree has its own PROMETHEUS_MULTIPROC_DIR and admin listener port
(its /metrics, at ``metrics_url``, shows only its own processes). Leaving
``private_tree()`` shuts it down through its own socket with bounded waits, then
SIGKILLs any process still carrying its USERHUB_VAR, and removes the directory:
nothing is left running. Its logs are kept first when the
variable named by ``keep_logs_in`` names a directory.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from actors.runtime.stores import SecretFiles
from actors.runtime.tree_config import TreeConfig
from actors.wire import messages
from tools import admin, pki, secrets
from tools.ports import free_port
from tools.supervisorctl import CONF, ROOT, VENV_BIN, Supervisorctl, wait_until

PYTHON = str(VENV_BIN / "python")

# What sizes or places one tree: an actors-only tree takes these from its overrides
# or the defaults, never from the tree whose environment it inherits.
_TREE_KEYS = frozenset(
    {
        "USERHUB_VAR",
        "USERHUB_MANAGER_ADDR",
        "USERHUB_HTTP_ADDR",
        "USERHUB_ADMIN_ADDR",
        "USERHUB_START_MYSQL",
        "USERHUB_START_REDIS",
        "USERHUB_GATEWAYS",
        "USERHUB_CACHE_WORKERS",
        "USERHUB_DB_WORKERS",
        "USERHUB_MYSQL_BUDGET",
        "USERHUB_DB_POOL_SIZE",
        "USERHUB_HASH_THREADS",
        "PROMETHEUS_MULTIPROC_DIR",
    }
)

# A tree with servers of its own is a test's: small servers, small pools.
_TEST_SIZES = {
    "USERHUB_INNODB_BUFFER_POOL": "128M",
    "USERHUB_REDIS_MAXMEMORY": "256mb",
    "USERHUB_DB_POOL_SIZE": "8",
    # Every test client is 127.0.0.1 and the throttle counts are shared by the
    # gateways: the per-address limits would otherwise couple unrelated tests.
    "USERHUB_LOGIN_MAX_FAILURES_ADDRESS": "10000",
    "USERHUB_SIGNUP_MAX_PER_ADDRESS": "10000",
}


def env_sh(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` completed by scripts/env.sh, exactly as `make run` would complete it."""
    out = subprocess.run(
        ["bash", "-c", ". scripts/env.sh && env -0"],
        cwd=ROOT,
        env=dict(env),
        check=True,
        capture_output=True,
        timeout=30,
    ).stdout
    return dict(item.split("=", 1) for item in out.decode().split("\0") if "=" in item)


def tree_env(
    var: Path,
    settings: Mapping[str, str] | None = None,
    *,
    own_servers: bool = True,
    base_env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of a private tree living in ``var`` (see the module's docstring).

    ``base_env`` (default: this process's) supplies PATH and the like and, for an
    actors-only tree, the DSN, the URL and every setting not in _TREE_KEYS.
    ``settings`` (USERHUB_* names) win over everything else.
    """
    base = os.environ if base_env is None else base_env
    if own_servers:
        env = {
            k: v
            for k, v in base.items()
            if not k.startswith("USERHUB_") and k != "PROMETHEUS_MULTIPROC_DIR"
        }
        env.update(
            USERHUB_MYSQL_PORT=str(free_port()), USERHUB_REDIS_PORT=str(free_port()), **_TEST_SIZES
        )
    else:
        missing = [k for k in ("USERHUB_MYSQL_DSN", "USERHUB_REDIS_URL") if not base.get(k)]
        if missing:
            raise ValueError(f"an actors-only tree needs {' and '.join(missing)} to point at")
        env = {k: v for k, v in base.items() if k not in _TREE_KEYS}
        env.update(USERHUB_START_MYSQL="false", USERHUB_START_REDIS="false")
        # The servers' passwords stay where the caller's tree keeps them, whatever
        # this tree's own var dir.
        files = SecretFiles.from_env(base)
        env.update(
            USERHUB_SECRETS_DIR=str(files.directory),
            USERHUB_MYSQL_PASSWORD_FILE=str(files.mysql),
            USERHUB_REDIS_PASSWORD_FILE=str(files.redis),
        )
    env.update(
        USERHUB_VAR=str(var),
        USERHUB_MANAGER_ADDR=f"127.0.0.1:{free_port()}",
        USERHUB_HTTP_ADDR=f"127.0.0.1:{free_port()}",
        # Its own: gateways of two trees on one admin port would share it (SO_REUSEPORT).
        USERHUB_ADMIN_ADDR=f"127.0.0.1:{free_port()}",
        PROMETHEUS_MULTIPROC_DIR=str(var / "metrics"),
    )
    env.update(settings or {})
    return env_sh(env)


class PrivateTree(Supervisorctl):
    """A running private tree: its addresses, its supervisorctl, its pool manager."""

    def __init__(self, var: Path, env: Mapping[str, str], *, stop_timeout: float = 90) -> None:
        super().__init__(var, env)
        self.config = TreeConfig.from_env(self.env)
        self.base_url = f"http://{self.env['USERHUB_HTTP_ADDR']}"
        self.admin_url = f"http://{self.env['USERHUB_ADMIN_ADDR']}"
        self.manager_addr = self.config.manager_addr
        self.pki_dir = self.config.pki_dir
        self.stop_timeout = stop_timeout  # MariaDB may take its stopwaitsecs (60 s)
        self.supervisord: subprocess.Popen[bytes] | None = None
        self.extra: list[subprocess.Popen[bytes]] = []
        self.ready_seconds = math.nan
        self.stop_seconds = math.nan

    @property
    def http(self) -> tuple[str, int]:
        return self.config.http_addr

    @property
    def metrics_url(self) -> str:
        """The host's metrics: the gateways' admin listener, not the public port."""
        return f"{self.admin_url}/metrics"

    # -- asking the tree ----------------------------------------------------------

    def workers(self, kind: str = "") -> messages.WorkerList:
        """The pool manager's view, asked from a thread of its own (callers may be async)."""
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, self._workers(kind)).result(timeout=10)

    async def _workers(self, kind: str) -> messages.WorkerList:
        return await admin.list_workers(self.manager_addr, self.pki_dir, kind)

    def ready(self, base_url: str | None = None) -> bool:
        """What /readyz says, on one fresh connection."""
        try:
            with urllib.request.urlopen(f"{base_url or self.base_url}/readyz", timeout=2) as r:
                return bool(json.load(r)["ready"])
        except (OSError, ValueError, KeyError):
            return False

    def all_ready(self) -> bool:
        """Every worker the tree started is registered and ready, and the gateways say ready.

        /readyz answers for whichever gateway the kernel picked, so it is asked on
        several fresh connections; the pool manager's list covers the workers.
        """
        try:
            listed = self.workers().workers
        except Exception:  # not listening yet, or not answering yet: ask again
            return False
        ready = [w for w in listed if w.ready]
        if sum(w.kind == "db_worker" for w in ready) < self.config.db_workers:
            return False
        if sum(w.kind == "cache_worker" for w in ready) < self.config.cache_workers:
            return False
        return all(self.ready() for _ in range(3 * self.config.gateways))

    def start_gateway(self, settings: Mapping[str, str] | None = None) -> str:
        """One more gateway process on a port of its own (outside supervisord).

        ``settings`` (USERHUB_* names) are this gateway's own, on top of the tree's.
        """
        addr = f"127.0.0.1:{free_port()}"
        env = {**self.env, **(settings or {}), "USERHUB_HTTP_ADDR": addr}
        with open(self.var / "log" / f"extra_gateway_{len(self.extra)}.log", "ab") as log:
            proc = subprocess.Popen(
                [PYTHON, "-m", "actors.gateway"], cwd=ROOT, env=env, stdout=log, stderr=log
            )
        self.extra.append(proc)
        url = f"http://{addr}"
        wait_until(lambda: self.ready(url), 20, f"extra gateway {addr}")
        return url

    # -- lifecycle ----------------------------------------------------------------

    def start(self, timeout: float = 60) -> None:
        """Start supervisord and wait, at most ``timeout`` s, until the tree is all_ready."""
        for sub in ("log", "run", "redis", "avatars"):
            (self.var / sub).mkdir(parents=True, exist_ok=True)
        self.config.metrics_dir.mkdir(parents=True, exist_ok=True)
        pki.ensure(self.pki_dir)
        secrets.ensure(self.config)  # the servers' passwords and the Redis config file
        if self.config.start_mysql:
            self._dbsetup("init", timeout=120)
        started = time.monotonic()
        # In the caller's process group: a signal to the whole group (Ctrl-C,
        # timeout(1)) reaches this supervisord too, even if no finally block runs.
        self.supervisord = subprocess.Popen(
            [str(VENV_BIN / "supervisord"), "-n", "-c", str(CONF)],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if self.config.start_mysql:
            self._dbsetup("bootstrap", timeout=120)
        deadline = time.monotonic() + timeout
        while not self.all_ready():
            if self.supervisord.poll() is not None:
                raise RuntimeError(f"supervisord exited with {self.supervisord.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"private tree in {self.var} not ready in {timeout} s")
            time.sleep(0.2)
        self.ready_seconds = round(time.monotonic() - started, 2)

    def _dbsetup(self, step: str, timeout: float) -> None:
        command = [PYTHON, "-m", "tools.dbsetup", step]
        subprocess.run(command, cwd=ROOT, env=self.env, check=True, timeout=timeout)

    def stop(self, timeout: float | None = None) -> None:
        """Extra gateways, then supervisorctl shutdown, a bounded wait, and kill the rest."""
        for proc in self.extra:
            proc.terminate()
        for proc in self.extra:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self.extra.clear()
        if self.supervisord is not None:
            started = time.monotonic()
            self._shut_down(self.supervisord, self.stop_timeout if timeout is None else timeout)
            self.supervisord = None
            self.stop_seconds = round(time.monotonic() - started, 2)
        self.kill_leftovers()

    def _shut_down(self, supervisord: subprocess.Popen[bytes], timeout: float) -> None:
        if supervisord.poll() is not None:
            return
        try:
            said = self.ctl("shutdown", timeout=10)
        except subprocess.TimeoutExpired:
            said = ""
        if "Shut down" not in said.splitlines():
            # Its socket was not up yet (or not answering): SIGTERM means the same.
            supervisord.send_signal(signal.SIGTERM)
        try:
            supervisord.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            supervisord.kill()
            supervisord.wait(timeout=10)

    def kill_leftovers(self, timeout: float = 5) -> list[int]:
        """SIGKILL every process still carrying this tree's USERHUB_VAR; their pids.

        After a clean shutdown there are none. After a hung one these are the
        programs supervisord never stopped and whatever they started, found by their
        environment rather than by pids recorded earlier, which restarts outdate.
        """
        pids = self._ours()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if pids:
            print(f"private tree {self.var}: killed leftover pids {pids}", file=sys.stderr)
            wait_until(lambda: not self._ours(), timeout, "leftover processes to die")
        return pids

    def _ours(self) -> list[int]:
        """Live processes of this tree: /proc/<pid>/environ names its USERHUB_VAR.

        A pid alone may have been reused since; the environment says whose it is.
        """
        marker = f"USERHUB_VAR={self.var}".encode()
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            except OSError:  # gone meanwhile, or not ours to read
                continue
            if marker in environ:
                found.append(int(entry))
        return found


@contextmanager
def private_tree(
    settings: Mapping[str, str] | None = None,
    *,
    own_servers: bool = True,
    base_env: Mapping[str, str] | None = None,
    prefix: str = "uh-",
    keep_logs_in: str = "USERHUB_KEEP_TEST_VAR",
    start_timeout: float = 60,
) -> Iterator[PrivateTree]:
    """A started private tree, stopped and removed on exit however the block ends.

    ``settings`` are USERHUB_* values for this tree (see tree_env); the tree lives in
    /tmp/<prefix>*; ``keep_logs_in`` names the variable whose directory, when set,
    receives a copy of its logs.
    """
    var = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        env = tree_env(var, settings, own_servers=own_servers, base_env=base_env)
        # Without MariaDB of its own, nothing in the tree should take long to stop.
        tree = PrivateTree(var, env, stop_timeout=90 if own_servers else 30)
    except BaseException:
        shutil.rmtree(var, ignore_errors=True)
        raise
    try:
        tree.start(start_timeout)
        yield tree
    finally:
        try:
            tree.stop()
        finally:
            keep = os.environ.get(keep_logs_in)
            if keep:
                shutil.copytree(var / "log", Path(keep) / var.name, dirs_exist_ok=True)
            shutil.rmtree(var, ignore_errors=True)
