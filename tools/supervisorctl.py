"""supervisorctl from Python, for any tree started from this repository's supervisord.conf.

The tree `make run` started and a private one (tools.private_tree) differ only in
USERHUB_VAR, which holds the control socket, so one wrapper serves the tests, the
benchmarks and the chaos runs. Every call is bounded in time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

from actors.runtime.env import REPO_ROOT, var_dir

ROOT = REPO_ROOT
VENV_BIN = ROOT / ".venv" / "bin"
CONF = ROOT / "supervisord.conf"

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1
) -> T:
    """Poll ``predicate`` until it returns something true, and return that.

    A predicate that raises counts as "not yet" (a socket not listening yet, a
    process not started yet); the last error is named when time runs out.
    """
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


# supervisord's process states; a line without one is a message (no socket, ...).
STATES = frozenset(
    {"STOPPED", "STARTING", "RUNNING", "BACKOFF", "STOPPING", "EXITED", "FATAL", "UNKNOWN"}
)


def parse_status(text: str) -> dict[str, tuple[str, int]]:
    """``supervisorctl status`` output as program name -> (state, pid); pid 0 when none."""
    out: dict[str, tuple[str, int]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1] in STATES:
            pid = int(parts[3].rstrip(",")) if len(parts) > 3 and parts[2] == "pid" else 0
            out[parts[0]] = (parts[1], pid)
    return out


class Supervisorctl:
    """One tree's supervisord, reached through the socket under its USERHUB_VAR."""

    def __init__(self, var: Path, env: Mapping[str, str]) -> None:
        self.var = var
        self.env = dict(env)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Supervisorctl:
        """The tree this environment describes: `make run`'s, after scripts/env.sh."""
        env = os.environ if environ is None else environ
        return cls(var_dir(env), env)

    @property
    def server_url(self) -> str:
        return f"unix://{self.var}/run/supervisor.sock"

    def ctl(self, *args: str, check: bool = False, timeout: float = 60) -> str:
        """Run one supervisorctl command and return what it printed."""
        done = subprocess.run(
            [str(VENV_BIN / "supervisorctl"), "-c", str(CONF), "-s", self.server_url, *args],
            env=self.env,
            capture_output=True,
            timeout=timeout,
            check=check,
        )
        return done.stdout.decode()

    def status(self) -> dict[str, tuple[str, int]]:
        """program name -> (state, pid)"""
        return parse_status(self.ctl("status"))

    def pid(self, name: str) -> int:
        state, pid = self.status()[name]
        if state != "RUNNING":
            raise RuntimeError(f"{name} is {state}")
        return pid

    def kill9(self, name: str) -> int:
        """SIGKILL a running program, as a crash would; supervisord restarts it."""
        pid = self.pid(name)
        os.kill(pid, signal.SIGKILL)
        return pid

    def wait_restarted(self, name: str, old_pid: int, timeout: float = 15) -> int:
        """The pid of ``name``'s replacement, once supervisord says it is RUNNING."""

        def new_pid() -> int:
            state, pid = self.status()[name]
            return pid if state == "RUNNING" and pid != old_pid else 0

        return wait_until(new_pid, timeout, f"{name} to come back")
