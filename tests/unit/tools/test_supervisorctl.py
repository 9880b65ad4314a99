"""tools.supervisorctl and tools.ports: status parsing, polling, the control socket."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tools.ports import free_port
from tools.supervisorctl import Supervisorctl, parse_status, wait_until

STATUS = """\
cache_worker:cache_worker_00     RUNNING   pid 4711, uptime 0:01:02
cache_worker_spare:cache_worker_02 STOPPED   Not started
db_worker:db_worker_00           STARTING
gateway:gateway_00               FATAL     Exited too quickly (process log may have details)
mysql                            RUNNING   pid 99, uptime 1 day, 2:03:04
"""


def test_free_port_can_be_bound() -> None:
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_parse_status() -> None:
    assert parse_status(STATUS) == {
        "cache_worker:cache_worker_00": ("RUNNING", 4711),
        "cache_worker_spare:cache_worker_02": ("STOPPED", 0),
        "db_worker:db_worker_00": ("STARTING", 0),
        "gateway:gateway_00": ("FATAL", 0),
        "mysql": ("RUNNING", 99),
    }
    assert parse_status("") == {}
    assert parse_status("unix:///x/run/supervisor.sock no such file\n") == {}


def test_wait_until_returns_the_first_true_value() -> None:
    answers = iter([0, None, 7])
    assert wait_until(lambda: next(answers), 5, "the answer", interval=0.01) == 7


def test_wait_until_names_what_and_the_last_error() -> None:
    def fails() -> int:
        raise ConnectionRefusedError("not yet")

    with pytest.raises(TimeoutError, match=r"the socket.*not yet"):
        wait_until(fails, 0.05, "the socket", interval=0.01)


def test_the_socket_lives_under_the_var_dir(tmp_path: Path) -> None:
    ctl = Supervisorctl.from_env({"USERHUB_VAR": str(tmp_path)})
    assert ctl.var == tmp_path
    assert ctl.server_url == f"unix://{tmp_path}/run/supervisor.sock"


def test_no_supervisord_means_no_programs(tmp_path: Path) -> None:
    ctl = Supervisorctl.from_env({"USERHUB_VAR": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert ctl.status() == {}
    with pytest.raises(KeyError):
        ctl.pid("gateway:gateway_00")
