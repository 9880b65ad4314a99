"""tools.private_tree without starting a tree: environments, clean-up, leftovers."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors.runtime.env import REPO_ROOT
from tools.private_tree import PrivateTree, private_tree, tree_env

CALLER = {
    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    # The caller's own tree: an actors-only tree inherits some of it, a tree with
    # servers of its own none of it.
    "USERHUB_VAR": "/srv/callers-var",
    "USERHUB_MYSQL_DSN": "mysql://bench:pw@127.0.0.1:3307/userhub",
    "USERHUB_REDIS_URL": "redis://127.0.0.1:6380/0",
    "USERHUB_DB_WORKERS": "9",
    "USERHUB_HASH_THREADS": "3",
    "USERHUB_SESSION_IDLE_S": "77",
    "USERHUB_HTTP_ADDR": "127.0.0.1:8080",
    "PROMETHEUS_MULTIPROC_DIR": "/srv/callers-var/metrics",
}


def test_a_tree_with_its_own_servers_ignores_the_callers_settings(tmp_path: Path) -> None:
    env = tree_env(tmp_path, {"USERHUB_GATEWAYS": "1"}, base_env=CALLER)
    assert env["USERHUB_VAR"] == str(tmp_path)
    assert env["PROMETHEUS_MULTIPROC_DIR"] == str(tmp_path / "metrics")
    assert (env["USERHUB_START_MYSQL"], env["USERHUB_START_REDIS"]) == ("true", "true")
    port = env["USERHUB_MYSQL_PORT"]
    assert env["USERHUB_MYSQL_DSN"] == f"mysql://userhub@127.0.0.1:{port}/userhub"
    assert env["USERHUB_REDIS_URL"] == f"redis://userhub@127.0.0.1:{env['USERHUB_REDIS_PORT']}/0"
    # Passwords of its own, made in its own var dir when it starts.
    assert env["USERHUB_SECRETS_DIR"] == str(tmp_path / "secrets")
    assert env["USERHUB_MYSQL_PASSWORD_FILE"] == str(
        tmp_path / "secrets" / "mysql-userhub.password"
    )
    ports = {
        env["USERHUB_MYSQL_PORT"],
        env["USERHUB_REDIS_PORT"],
        env["USERHUB_MANAGER_ADDR"].rsplit(":", 1)[1],
        env["USERHUB_HTTP_ADDR"].rsplit(":", 1)[1],
        env["USERHUB_ADMIN_ADDR"].rsplit(":", 1)[1],
    }
    assert len(ports) == 5 and not ports & {"8080", "3307", "9180"}
    assert env["USERHUB_DB_WORKERS"] == "2"  # the default, not the caller's 9
    assert "USERHUB_SESSION_IDLE_S" not in env
    assert env["USERHUB_GATEWAYS"] == "1"
    assert (env["USERHUB_DB_POOL_SIZE"], env["USERHUB_INNODB_BUFFER_POOL"]) == ("8", "128M")
    assert env["PYTHONPATH"].split(":")[0] == str(REPO_ROOT)


def test_an_actors_only_tree_uses_the_callers_servers(tmp_path: Path) -> None:
    env = tree_env(tmp_path, {"USERHUB_DB_WORKERS": "1"}, own_servers=False, base_env=CALLER)
    assert env["USERHUB_VAR"] == str(tmp_path)
    assert env["PROMETHEUS_MULTIPROC_DIR"] == str(tmp_path / "metrics")
    assert (env["USERHUB_START_MYSQL"], env["USERHUB_START_REDIS"]) == ("false", "false")
    assert env["USERHUB_MYSQL_DSN"] == CALLER["USERHUB_MYSQL_DSN"]
    assert env["USERHUB_REDIS_URL"] == CALLER["USERHUB_REDIS_URL"]
    assert env["USERHUB_SESSION_IDLE_S"] == "77"  # inherited
    # The caller's servers' passwords, where the caller's tree keeps them.
    assert env["USERHUB_SECRETS_DIR"] == "/srv/callers-var/secrets"
    assert env["USERHUB_MYSQL_PASSWORD_FILE"] == "/srv/callers-var/secrets/mysql-userhub.password"
    assert env["USERHUB_REDIS_PASSWORD_FILE"] == "/srv/callers-var/secrets/redis-userhub.password"
    assert "USERHUB_HASH_THREADS" not in env  # sized by this tree's db_workers instead
    assert env["USERHUB_DB_WORKERS"] == "1"
    assert env["USERHUB_HTTP_ADDR"] != CALLER["USERHUB_HTTP_ADDR"]


def test_an_actors_only_tree_needs_servers_to_point_at(tmp_path: Path) -> None:
    base = {k: v for k, v in CALLER.items() if k != "USERHUB_REDIS_URL"}
    with pytest.raises(ValueError, match="USERHUB_REDIS_URL"):
        tree_env(tmp_path, own_servers=False, base_env=base)


def test_a_handle_knows_its_addresses(tmp_path: Path) -> None:
    tree = PrivateTree(tmp_path, tree_env(tmp_path, base_env=CALLER))
    host, port = tree.http
    assert tree.base_url == f"http://{host}:{port}"
    admin_host, admin_port = tree.config.admin_addr
    assert admin_port != port
    assert tree.metrics_url == f"http://{admin_host}:{admin_port}/metrics"
    assert f"{tree.manager_addr[0]}:{tree.manager_addr[1]}" == tree.env["USERHUB_MANAGER_ADDR"]
    assert tree.server_url == f"unix://{tmp_path}/run/supervisor.sock"
    assert not tree.ready()  # nothing listens there
    tree.stop()  # never started: nothing to do


@pytest.fixture
def sleepers(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]]:
    """One process of a tree in tmp_path/ours and one of another tree."""
    ours = subprocess.Popen(["sleep", "60"], env={"USERHUB_VAR": str(tmp_path / "ours")})
    theirs = subprocess.Popen(["sleep", "60"], env={"USERHUB_VAR": str(tmp_path / "ours2")})
    yield ours, theirs
    for proc in (ours, theirs):
        proc.kill()
        proc.wait()


def test_leftovers_are_found_by_their_environment(
    tmp_path: Path, sleepers: tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]
) -> None:
    ours, theirs = sleepers
    tree = PrivateTree(tmp_path / "ours", tree_env(tmp_path / "ours", base_env=CALLER))
    assert tree.kill_leftovers() == [ours.pid]
    assert ours.wait(timeout=5) == -9
    assert theirs.poll() is None, "another tree's process is left alone"
    assert tree.kill_leftovers() == []


def test_a_tree_that_fails_to_start_is_stopped_and_removed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    made: list[PrivateTree] = []
    stopped: list[Path] = []

    def start(self: PrivateTree, timeout: float = 60) -> None:
        made.append(self)
        (self.var / "log").mkdir()
        (self.var / "log" / "gateway_00.log").write_text("it went wrong\n")
        raise TimeoutError("not ready")

    monkeypatch.setattr(PrivateTree, "start", start)
    monkeypatch.setattr(PrivateTree, "stop", lambda self: stopped.append(self.var))
    monkeypatch.setenv("USERHUB_KEEP_TEST_VAR", str(tmp_path / "kept"))
    with pytest.raises(TimeoutError), private_tree({"USERHUB_GATEWAYS": "1"}):
        pytest.fail("the block must not run")
    var = made[0].var
    assert stopped == [var]
    assert not var.exists(), "the tree's directory is removed"
    assert var.name.startswith("uh-")
    kept = tmp_path / "kept" / var.name / "gateway_00.log"
    assert kept.read_text() == "it went wrong\n"


def test_a_bad_setting_leaves_no_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []
    real = tempfile.mkdtemp

    def mkdtemp(prefix: str, dir: str) -> str:
        made.append(real(prefix=prefix, dir=dir))
        return made[-1]

    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)
    with (
        pytest.raises(subprocess.CalledProcessError),
        private_tree({"USERHUB_DB_WORKERS": "lots"}, prefix="uh-unit-"),
    ):
        pytest.fail("the block must not run")
    assert made and not Path(made[0]).exists()
