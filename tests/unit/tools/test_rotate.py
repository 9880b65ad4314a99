"""tools.rotate without a tree: what it leaves alone, and in which order it restarts."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.runtime.tree_config import TreeConfig
from tools import dbsetup, pki, rotate, secrets
from tools.supervisorctl import Supervisorctl


class FakeCtl(Supervisorctl):
    def __init__(self, var: Path, env: dict[str, str], status: dict[str, tuple[str, int]]) -> None:
        super().__init__(var, env)
        self._status = status

    def status(self) -> dict[str, tuple[str, int]]:
        return dict(self._status)


def test_passwords_written_in_the_dsn_and_url_are_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {
        "USERHUB_VAR": str(tmp_path),
        # Private servers, but with passwords the operator wrote into the settings.
        "USERHUB_MYSQL_DSN": "mysql://userhub:theirs@127.0.0.1:3307/userhub",
        "USERHUB_REDIS_URL": "redis://userhub:theirs@127.0.0.1:6380/0",
        "USERHUB_START_MYSQL": "true",
        "USERHUB_START_REDIS": "true",
    }
    tree = TreeConfig.from_env(env)
    secrets.ensure(tree)
    before = {p: p.read_text() for p in tree.secrets.directory.iterdir()}
    pki.ensure(tree.pki_dir)

    def no_server(*args: object, **kwargs: object) -> None:
        pytest.fail("no server is touched")

    monkeypatch.setattr(dbsetup, "admin_connect", no_server)
    monkeypatch.setattr(rotate, "_redis_admin", no_server)
    restarts: list[str] = []
    monkeypatch.setattr(rotate.Restarter, "restart", lambda self, name: restarts.append(name))
    ctl = FakeCtl(tmp_path, env, {"gateway:gateway_00": ("RUNNING", 1)})
    done = rotate.rotate(tree, ctl, log=lambda line: None)
    assert (done.mysql, done.redis) == (False, False)
    assert {p: p.read_text() for p in tree.secrets.directory.iterdir()} == before
    assert restarts == ["gateway:gateway_00", "gateway:gateway_00"]  # certificates still rotate
    assert not pki.staged(tree.pki_dir)


def test_actors_restart_pool_manager_first_gateways_last_servers_never() -> None:
    status = {
        "gateway:gateway_00": ("RUNNING", 9),
        "redis": ("RUNNING", 2),
        "cache_worker:cache_worker_00": ("RUNNING", 7),
        "db_worker_spare:db_worker_02": ("RUNNING", 6),
        "db_worker_spare:db_worker_03": ("STOPPED", 0),
        "db_worker:db_worker_00": ("RUNNING", 5),
        "mysql": ("RUNNING", 3),
        "crash_reporter": ("RUNNING", 4),
        "pool_manager": ("RUNNING", 8),
    }
    ctl = FakeCtl(Path("/nonexistent"), {}, status)
    restarter = rotate.Restarter(TreeConfig.from_env({}), ctl)
    assert restarter.actors() == [
        "pool_manager",
        "db_worker:db_worker_00",
        "db_worker_spare:db_worker_02",
        "cache_worker:cache_worker_00",
        "gateway:gateway_00",
    ]
