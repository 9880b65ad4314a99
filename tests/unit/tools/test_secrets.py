"""tools.secrets: the private servers' passwords, their files and their modes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from actors.runtime.tree_config import TreeConfig
from tools import redis_acl, secrets


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def tree_in(var: Path, **settings: str) -> TreeConfig:
    return TreeConfig.from_env({"USERHUB_VAR": str(var), "USERHUB_REDIS_PORT": "6399", **settings})


def test_set_up_makes_three_passwords_0600_in_a_0700_directory(tmp_path: Path) -> None:
    tree = tree_in(tmp_path)
    assert sorted(secrets.ensure(tree)) == ["mysql", "redis", "redis-admin"]
    files = tree.secrets
    assert mode(files.directory) == 0o700
    values = set()
    for path in (files.mysql, files.redis, files.redis_admin, files.redis_conf):
        assert mode(path) == 0o600, path
        assert path.stat().st_uid == os.geteuid()
    for path in (files.mysql, files.redis, files.redis_admin):
        value = secrets.read_secret(path)
        assert len(value) >= 43 and value.isascii()  # 32 random bytes, URL-safe base64
        assert set(value) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        values.add(value)
    assert len(values) == 3, "every password is its own"
    assert sorted(p.name for p in files.directory.iterdir()) == sorted(
        [files.mysql.name, files.redis.name, files.redis_admin.name, files.redis_conf.name]
    ), "no temporary file is left behind"


def test_a_second_run_keeps_the_passwords_and_tightens_modes(tmp_path: Path) -> None:
    tree = tree_in(tmp_path)
    secrets.ensure(tree)
    before = secrets.read_secret(tree.secrets.mysql)
    os.chmod(tree.secrets.mysql, 0o644)
    os.chmod(tree.secrets.directory, 0o755)
    assert secrets.ensure(tree) == []
    assert secrets.read_secret(tree.secrets.mysql) == before
    assert mode(tree.secrets.mysql) == 0o600
    assert mode(tree.secrets.directory) == 0o700


def test_an_empty_file_gets_a_password(tmp_path: Path) -> None:
    tree = tree_in(tmp_path)
    tree.secrets.directory.mkdir(mode=0o700)
    tree.secrets.redis.write_text("\n")
    assert "redis" in secrets.ensure(tree)
    assert secrets.read_secret(tree.secrets.redis)


def test_servers_of_ones_own_get_no_password_from_here(tmp_path: Path) -> None:
    tree = tree_in(
        tmp_path,
        USERHUB_MYSQL_DSN="mysql://svc:theirs@db:3306/users",
        USERHUB_REDIS_URL="redis://svc:theirs@cache:6379/0",
    )
    assert secrets.ensure(tree) == []
    assert not tree.secrets.directory.exists()
    only_redis = tree_in(tmp_path, USERHUB_MYSQL_DSN="mysql://svc:theirs@db:3306/users")
    assert sorted(secrets.ensure(only_redis)) == ["redis", "redis-admin"]
    assert not only_redis.secrets.mysql.exists()


def test_a_file_never_exists_with_a_wider_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The temporary file is 0600 from its creation, whatever the umask, before the rename."""
    seen: list[int] = []
    real_replace = os.replace

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        seen.append(mode(Path(src)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    old_umask = os.umask(0)
    try:
        secrets.write_private(tmp_path / "sub" / "pw", "x\n")
    finally:
        os.umask(old_umask)
    assert seen == [0o600]
    assert mode(tmp_path / "sub" / "pw") == 0o600
    assert mode(tmp_path / "sub") == 0o700


def test_a_failed_write_leaves_neither_file_nor_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        secrets.write_private(tmp_path / "pw", "x\n")
    assert list(tmp_path.iterdir()) == []


def test_the_redis_conf_follows_the_settings_and_holds_only_hashes(tmp_path: Path) -> None:
    tree = tree_in(tmp_path, USERHUB_REDIS_MAXMEMORY="96mb")
    secrets.ensure(tree)
    conf = tree.secrets.redis_conf.read_text()
    lines = conf.splitlines()
    assert "port 6399" in lines and "maxmemory 96mb" in lines
    assert "maxmemory-policy noeviction" in lines
    assert f'dir "{tmp_path / "redis"}"' in lines
    for path in (tree.secrets.redis, tree.secrets.redis_admin):
        password = secrets.read_secret(path)
        assert password not in conf
        assert redis_acl.password_hash(password) in conf


def test_a_missing_secret_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"tools\.secrets ensure"):
        secrets.read_secret(tmp_path / "absent")


def test_show_names_files_and_modes_never_values(tmp_path: Path) -> None:
    tree = tree_in(tmp_path)
    secrets.ensure(tree)
    text = "\n".join(secrets.describe(tree.secrets))
    assert "0700" in text and "0600" in text
    assert secrets.read_secret(tree.secrets.mysql) not in text


def test_a_file_of_its_own_setting_leaves_its_directory_mode_alone(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    tree = tree_in(tmp_path / "var", USERHUB_MYSQL_PASSWORD_FILE=str(shared / "mysql.pw"))
    assert "mysql" in secrets.ensure(tree)
    assert mode(shared) == 0o755  # not ours to tighten
    assert mode(shared / "mysql.pw") == 0o600
    assert mode(tree.secrets.directory) == 0o700
