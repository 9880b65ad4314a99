"""actors.wire.errors: every error crosses the wire and comes back as itself."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import actors
import tools
from actors.wire import errors, protocol
from actors.wire.errors import UserhubError


def every_error_class() -> list[type[UserhubError]]:
    """Every UserhubError subclass defined anywhere in actors/ and tools/."""
    for package in (actors, tools):
        for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            importlib.import_module(module.name)

    def walk(cls: type[UserhubError]) -> list[type[UserhubError]]:
        return [c for sub in cls.__subclasses__() for c in (sub, *walk(sub))]

    return walk(UserhubError)


ALL = every_error_class()


def test_the_registry_holds_every_error_once() -> None:
    assert {cls.code for cls in ALL} == set(errors.BY_CODE)
    assert len({cls.code for cls in ALL}) == len(ALL), "two errors share a code"
    assert all(cls.__module__ == errors.__name__ for cls in ALL), "errors live in one module"


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_each_error_decodes_from_its_code_as_itself(cls: type[UserhubError]) -> None:
    exc = errors.Throttled("wait", retry_after_s=7) if cls is errors.Throttled else cls("boom")
    wire = protocol.error_message(exc)
    back = errors.from_code(wire.code, wire.message, field=wire.field, retry_after_s=7)
    assert type(back) is cls
    assert (back.code, back.message, back.http_status, back.retriable) == (
        exc.code,
        exc.message,
        exc.http_status,
        exc.retriable,
    )


def test_the_families_split_by_who_is_at_fault() -> None:
    for cls in ALL:
        family = [
            f
            for f in (errors.CallerError, errors.DependencyError, errors.InternalError)
            if issubclass(cls, f)
        ]
        assert len(family) == 1, cls
        if issubclass(cls, errors.CallerError):
            assert 400 <= cls.http_status < 500 and not cls.retriable
        elif issubclass(cls, errors.DependencyError):
            assert cls.http_status in (503, 504) and cls.retriable
        else:
            assert cls.http_status == 500 and not cls.retriable


def test_an_unknown_code_is_an_internal_error() -> None:
    assert type(errors.from_code("no_such_code", "x")) is errors.InternalError
