"""tools.dbsetup without a server: the schema step and the privileges it wants."""

from __future__ import annotations

import getpass

import pytest

from actors.runtime.stores import MysqlDsn
from tools import dbsetup

SERVICE = MysqlDsn("db", 3306, "userhub", "svc-pw", "userhub")
ADMIN = MysqlDsn("db", 3306, "admin", "", "userhub")


@pytest.fixture
def applied(monkeypatch: pytest.MonkeyPatch) -> list[MysqlDsn]:
    through: list[MysqlDsn] = []
    monkeypatch.setattr(dbsetup, "apply_schema", lambda dsn, timeout_s=60: through.append(dsn))
    return through


def test_a_complete_schema_is_left_alone(
    monkeypatch: pytest.MonkeyPatch, applied: list[MysqlDsn]
) -> None:
    monkeypatch.setattr(dbsetup, "missing_tables", lambda dsn, timeout_s=60: [])

    def admin() -> MysqlDsn:
        pytest.fail("the admin DSN (and its password) is asked for only when tables lack")

    assert dbsetup.ensure_schema(SERVICE, admin) is False
    assert applied == []  # no DDL


def test_missing_tables_are_made_through_the_admin_dsn_asked_for_only_then(
    monkeypatch: pytest.MonkeyPatch, applied: list[MysqlDsn]
) -> None:
    monkeypatch.setattr(dbsetup, "missing_tables", lambda dsn, timeout_s=60: ["sessions"])
    monkeypatch.setattr(getpass, "getpass", lambda prompt: "typed-pw")
    assert dbsetup.ensure_schema(SERVICE, lambda: dbsetup.ask_password(ADMIN)) is True
    assert applied == [MysqlDsn("db", 3306, "admin", "typed-pw", "userhub")]


def test_without_an_admin_dsn_the_service_dsn_is_tried(
    monkeypatch: pytest.MonkeyPatch, applied: list[MysqlDsn]
) -> None:
    monkeypatch.setattr(dbsetup, "missing_tables", lambda dsn, timeout_s=60: ["users"])
    assert dbsetup.ensure_schema(SERVICE) is True
    assert applied == [SERVICE]


def test_a_dsn_with_its_password_is_not_asked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(getpass, "getpass", lambda prompt: pytest.fail("asked"))
    assert dbsetup.ask_password(SERVICE) is SERVICE


def test_the_service_account_wants_four_privileges_on_its_database_only() -> None:
    assert dbsetup.wanted_privileges("userhub") == {
        ("schema", "userhub", "SELECT"),
        ("schema", "userhub", "INSERT"),
        ("schema", "userhub", "UPDATE"),
        ("schema", "userhub", "DELETE"),
    }
    assert dbsetup.ACCOUNT_HOSTS == ("127.0.0.1", "localhost")  # loopback only
