"""actors.runtime.config's TreeConfig and the export lines scripts/env.sh evaluates."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from actors.runtime import env
from actors.runtime.config import CacheWorkerConfig, DbWorkerConfig
from actors.runtime.tree_config import TreeConfig

ROOT = env.REPO_ROOT

#: What scripts/env.sh exports, in its order.
EXPORTED = [
    "USERHUB_ROOT", "USERHUB_VAR", "USERHUB_PKI_DIR", "USERHUB_SECRETS_DIR",
    "USERHUB_MYSQL_PASSWORD_FILE", "USERHUB_REDIS_PASSWORD_FILE", "USERHUB_PYTHON",
    "USERHUB_OS_USER",
    "USERHUB_MYSQL_PORT", "USERHUB_REDIS_PORT", "USERHUB_MYSQL_DSN", "USERHUB_START_MYSQL",
    "USERHUB_REDIS_URL", "USERHUB_START_REDIS", "USERHUB_REDIS_MAXMEMORY",
    "USERHUB_INNODB_BUFFER_POOL", "USERHUB_MANAGER_ADDR", "USERHUB_HTTP_ADDR",
    "USERHUB_ADMIN_ADDR", "USERHUB_DB_WORKERS", "USERHUB_CACHE_WORKERS", "USERHUB_GATEWAYS",
    "USERHUB_SPARE_WORKERS",
    "PROMETHEUS_MULTIPROC_DIR", "PYTHONPATH",
]  # fmt: skip


def clean(**extra: str) -> dict[str, str]:
    """The process environment without userhub's settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("USERHUB_")}
    for name in ("PROMETHEUS_MULTIPROC_DIR", "PYTHONPATH"):
        env.pop(name, None)
    return env | extra


def sourced(env: dict[str, str], before: str = "") -> dict[str, str]:
    """The environment after ``before; . scripts/env.sh`` in bash, run elsewhere than the root."""
    out = subprocess.run(
        ["bash", "-c", f'{before}\n. "{ROOT}/scripts/env.sh" && env -0'],
        cwd="/",
        env=env,
        check=True,
        capture_output=True,
    ).stdout
    return dict(item.split("=", 1) for item in out.decode().split("\0") if "=" in item)


def test_defaults() -> None:
    tree = TreeConfig.from_env(clean())
    assert tree.root == ROOT
    assert tree.var_dir == ROOT / "var"
    assert tree.python == ROOT / ".venv" / "bin" / "python"
    assert (tree.mysql_port, tree.redis_port) == (3307, 6380)
    # The accounts, never their passwords: those are in files under var/secrets.
    assert tree.mysql_dsn == "mysql://userhub@127.0.0.1:3307/userhub"
    assert tree.redis_url == "redis://userhub@127.0.0.1:6380/0"
    assert tree.secrets.directory == ROOT / "var" / "secrets"
    assert tree.secrets.mysql == ROOT / "var" / "secrets" / "mysql-userhub.password"
    assert (tree.start_mysql, tree.start_redis) == (True, True)
    assert (tree.redis_maxmemory, tree.innodb_buffer_pool) == ("2gb", "4G")
    assert tree.manager_addr == ("127.0.0.1", 7400)
    assert tree.http_addr == ("127.0.0.1", 8080)
    assert tree.admin_addr == ("127.0.0.1", 9180)
    assert (tree.db_workers, tree.cache_workers, tree.gateways, tree.spare_workers) == (2, 2, 2, 2)
    assert tree.metrics_dir == ROOT / "var" / "metrics"
    assert tree.pythonpath == str(ROOT)
    assert tree.os_user


def test_the_dsn_and_url_follow_the_private_ports() -> None:
    tree = TreeConfig.from_env(clean(USERHUB_MYSQL_PORT="4406", USERHUB_REDIS_PORT="6499"))
    assert tree.mysql_dsn == "mysql://userhub@127.0.0.1:4406/userhub"
    assert tree.redis_url == "redis://userhub@127.0.0.1:6499/0"


def test_the_workers_dsn_follows_the_port_too(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("USERHUB_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("USERHUB_MYSQL_PORT", "4406")
    monkeypatch.setenv("USERHUB_REDIS_PORT", "6499")
    assert DbWorkerConfig.from_env().mysql.port == 4406
    assert CacheWorkerConfig.from_env().redis_url == "redis://userhub@127.0.0.1:6499/0"


def test_a_dsn_of_ones_own_means_no_private_server() -> None:
    tree = TreeConfig.from_env(
        clean(USERHUB_MYSQL_DSN="mysql://a:b@db:3306/x", USERHUB_REDIS_URL="redis://r:6379/1")
    )
    assert (tree.mysql_dsn, tree.start_mysql) == ("mysql://a:b@db:3306/x", False)
    assert (tree.redis_url, tree.start_redis) == ("redis://r:6379/1", False)
    # ... unless asked for (fault proxies in front of the private servers)
    tree = TreeConfig.from_env(
        clean(USERHUB_MYSQL_DSN="mysql://a:b@db:3306/x", USERHUB_START_MYSQL="true")
    )
    assert tree.start_mysql is True


def test_set_values_win_and_empty_ones_mean_the_default(tmp_path: Path) -> None:
    tree = TreeConfig.from_env(
        clean(
            USERHUB_VAR=str(tmp_path),
            USERHUB_DB_WORKERS="5",
            USERHUB_GATEWAYS="",
            USERHUB_HTTP_ADDR="[::1]:9090",
            USERHUB_START_REDIS="no",
            USERHUB_MYSQL_DSN="",
            PYTHONPATH="/elsewhere",
        )
    )
    assert tree.var_dir == tmp_path
    assert tree.metrics_dir == tmp_path / "metrics"  # follows the var dir
    assert tree.secrets.redis == tmp_path / "secrets" / "redis-userhub.password"  # likewise
    assert (tree.db_workers, tree.gateways) == (5, 2)
    assert tree.exports()["USERHUB_HTTP_ADDR"] == "[::1]:9090"
    assert tree.start_redis is False
    assert tree.start_mysql is True
    assert tree.pythonpath == f"{ROOT}:/elsewhere"


@pytest.mark.parametrize(
    ("name", "value"),
    [("USERHUB_GATEWAYS", "two"), ("USERHUB_START_MYSQL", "maybe"), ("USERHUB_HTTP_ADDR", "x")],
)
def test_bad_values_fail_loudly(name: str, value: str) -> None:
    with pytest.raises(ValueError, match=name if name != "USERHUB_HTTP_ADDR" else "host:port"):
        TreeConfig.from_env(clean(**{name: value}))


def test_every_shell_line_is_one_quoted_export() -> None:
    awkward = "/tmp/a dir/with 'quotes' and $dollars; `ticks`"
    tree = TreeConfig.from_env(clean(USERHUB_VAR=awkward, USERHUB_OS_USER="o'brien"))
    lines = tree.shell().splitlines()
    assert [line.split(" ", 1)[1].split("=", 1)[0] for line in lines] == EXPORTED
    for line in lines:
        word, assignment = shlex.split(line)
        assert word == "export"
        name, value = assignment.split("=", 1)
        assert value == tree.exports()[name]


def test_bash_reads_back_what_was_printed() -> None:
    awkward = "/tmp/a dir/with 'quotes' and $dollars; `ticks`"
    env = clean(USERHUB_VAR=awkward)
    printed = TreeConfig.from_env(env).shell()
    out = subprocess.run(
        ["bash", "-c", 'eval "$1" && printf %s "$USERHUB_VAR"', "-", printed],
        env=env,
        check=True,
        capture_output=True,
    )
    assert out.stdout.decode() == awkward


def test_the_module_prints_the_export_lines() -> None:
    env = clean(USERHUB_GATEWAYS="3")
    out = subprocess.run(
        [sys.executable, "-m", "actors.runtime.tree_config", "--shell"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    assert out.stdout.decode() == TreeConfig.from_env(env).shell()
    bad = subprocess.run(
        [sys.executable, "-m", "actors.runtime.tree_config", "--shell"],
        cwd=ROOT,
        env=clean(USERHUB_GATEWAYS="two"),
        capture_output=True,
    )
    assert bad.returncode == 2
    assert b"USERHUB_GATEWAYS" in bad.stderr


def test_env_sh_exports_exactly_the_tree_config() -> None:
    env = clean()
    after = sourced(env)
    expected = TreeConfig.from_env(env).exports()
    assert {k: after[k] for k in EXPORTED} == expected
    added = {k for k in after if k not in env} - {"PWD", "SHLVL", "_", "OLDPWD"}
    assert added == set(EXPORTED), "env.sh exports nothing else"


def test_env_sh_keeps_what_the_shell_set_even_unexported() -> None:
    after = sourced(clean(USERHUB_REDIS_PORT="6501"), before="USERHUB_DB_WORKERS=7")
    assert after["USERHUB_DB_WORKERS"] == "7"
    assert after["USERHUB_REDIS_URL"] == "redis://userhub@127.0.0.1:6501/0"


def test_env_sh_fails_when_a_value_is_bad() -> None:
    done = subprocess.run(
        ["bash", "-c", f'. "{ROOT}/scripts/env.sh" && echo sourced'],
        env=clean(USERHUB_DB_WORKERS="lots"),
        capture_output=True,
    )
    assert done.returncode != 0
    assert b"sourced" not in done.stdout
    assert b"USERHUB_DB_WORKERS" in done.stderr
