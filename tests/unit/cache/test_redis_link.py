"""actors.cache.redis_link: a write Redis refuses for want of memory drops its key."""

from __future__ import annotations

from typing import Any

import pytest
from redis.exceptions import OutOfMemoryError, ResponseError

from actors.cache.redis_link import RedisLink, out_of_memory
from actors.wire.errors import CacheUnavailable


@pytest.fixture
def link(monkeypatch: pytest.MonkeyPatch) -> tuple[RedisLink, list[str]]:
    """A link to nothing (no call below reaches a socket); DEL recorded instead."""
    deleted: list[str] = []
    made = RedisLink("redis://userhub@127.0.0.1:1/0", 1, password="pw")

    async def delete(*keys: str) -> int:
        deleted.extend(keys)
        return len(keys)

    monkeypatch.setattr(made.redis, "delete", delete)
    return made, deleted


@pytest.mark.parametrize(
    "refusal",
    [
        OutOfMemoryError("command not allowed when used memory > 'maxmemory'."),  # redis-py
        ResponseError("OOM command not allowed when used memory > 'maxmemory'. script: ab"),
    ],
)
async def test_a_write_refused_for_memory_deletes_its_key(
    link: tuple[RedisLink, list[str]], refusal: ResponseError
) -> None:
    made, deleted = link

    async def refused() -> Any:
        raise refusal

    assert await made.write_or_drop("uh:s:abc", refused) is None
    assert deleted == ["uh:s:abc"]
    assert not made.breaker.is_open  # Redis answers; it is only full


async def test_a_write_that_succeeds_deletes_nothing(link: tuple[RedisLink, list[str]]) -> None:
    made, deleted = link

    async def stored() -> Any:
        return 1

    assert await made.write_or_drop("uh:u:1", stored) == 1
    assert deleted == []


async def test_other_errors_are_cache_unavailable_as_before(
    link: tuple[RedisLink, list[str]],
) -> None:
    made, deleted = link

    async def wrong_type() -> Any:
        raise ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value")

    with pytest.raises(CacheUnavailable):
        await made.write_or_drop("uh:u:1", wrong_type)
    assert deleted == []
    await made.close()


def test_out_of_memory_is_told_from_other_refusals() -> None:
    assert out_of_memory(OutOfMemoryError("command not allowed"))
    assert out_of_memory(ResponseError("OOM command not allowed when used memory"))
    assert not out_of_memory(ResponseError("NOPERM this user has no permissions"))
    assert not out_of_memory(ResponseError("NOSCRIPT No matching script"))
