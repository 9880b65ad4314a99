"""actors.web.image_store: content-addressed files, written once and atomically."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from actors.web.image_store import ImageStore, LocalImageStore
from actors.web.images import StoredImage, validate_avatar
from tests.unit.web.test_images import encode, noisy


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


@pytest.fixture
def stored() -> StoredImage:
    return validate_avatar(encode(noisy((40, 40)), "PNG"))


async def test_local_store_round_trip(tmp_path: Path, stored: StoredImage) -> None:
    store = LocalImageStore(tmp_path)
    assert isinstance(store, ImageStore)
    assert not await store.exists(stored.key)
    assert await store.get(stored.key) is None

    await store.put(stored)
    assert await store.exists(stored.key)
    assert await store.get(stored.key) == stored.data

    path = tmp_path / stored.key[:2] / stored.key[2:4] / stored.key
    assert store.path_for(stored.key) == path
    assert path.read_bytes() == stored.data
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert files_under(tmp_path) == [path]  # no temporary file left behind


async def test_local_store_put_is_idempotent(tmp_path: Path, stored: StoredImage) -> None:
    store = LocalImageStore(str(tmp_path))
    await store.put(stored)
    path = store.path_for(stored.key)
    assert path is not None
    before = path.stat().st_mtime_ns
    await store.put(stored)
    assert path.stat().st_mtime_ns == before
    assert await store.get(stored.key) == stored.data


@pytest.mark.parametrize(
    "key",
    ["", "../../etc/passwd", "ab" * 32, "AB" * 32 + ".png", "ab" * 32 + ".png/../x", "x.png"],
)
async def test_local_store_bad_key(tmp_path: Path, key: str) -> None:
    store = LocalImageStore(tmp_path)
    assert store.path_for(key) is None
    assert await store.get(key) is None
    assert not await store.exists(key)


async def test_local_store_refuses_mismatched_data(tmp_path: Path, stored: StoredImage) -> None:
    store = LocalImageStore(tmp_path)
    with pytest.raises(ValueError):
        await store.put(StoredImage(key=stored.key, data=b"other", content_type="image/png"))
    with pytest.raises(ValueError):
        await store.put(StoredImage(key="nope", data=b"", content_type="image/png"))
    assert files_under(tmp_path) == []
