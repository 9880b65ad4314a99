"""actors.web.image_store: content-addressed files, written once and atomically."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest
from PIL import Image

from actors.web.image_store import ImageStore, LocalImageStore
from actors.web.images import StoredImage, validate_avatar
from tests.unit.web.test_images import encode, noisy


def pictures(count: int) -> list[StoredImage]:
    """``count`` different small pictures, sorted by key."""
    made = [
        validate_avatar(encode(Image.new("RGB", (8, 8), (i * 30 % 256, 7 + i // 8 * 40, 9)), "PNG"))
        for i in range(count)
    ]
    assert len({image.key for image in made}) == count
    return sorted(made, key=lambda image: image.key)


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


async def test_local_store_put_again_keeps_the_bytes_and_refreshes_the_time(
    tmp_path: Path, stored: StoredImage
) -> None:
    """A second put is what protects an upload in flight from the orphan sweeper."""
    store = LocalImageStore(str(tmp_path))
    await store.put(stored)
    path = store.path_for(stored.key)
    assert path is not None
    os.utime(path, (1_000_000, 1_000_000))  # stored long ago
    inode = path.stat().st_ino
    await store.put(stored)
    assert path.stat().st_mtime > time.time() - 60
    assert path.stat().st_ino == inode, "touched, not written again"
    assert await store.get(stored.key) == stored.data
    assert files_under(tmp_path) == [path]


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


async def test_listing_walks_every_key_in_order_page_by_page(tmp_path: Path) -> None:
    store = LocalImageStore(tmp_path)
    images = pictures(7)
    for image in images:
        await store.put(image)
    (tmp_path / "ab").mkdir(exist_ok=True)
    (tmp_path / "ab" / "stray.txt").write_text("not a key")  # ignored
    (tmp_path / "zz").mkdir()  # not a fan-out directory: ignored
    seen, after = [], ""
    while page := await store.list_after(after, 3):
        assert len(page) <= 3
        seen += page
        after = page[-1].key
    assert [item.key for item in seen] == [image.key for image in images]
    assert all(abs(item.modified - time.time()) < 60 for item in seen)
    assert await store.list_after(images[-1].key, 3) == []
    assert await store.list_after("", 0) == []
    assert await LocalImageStore(tmp_path / "nothing").list_after("", 5) == []


async def test_delete_if_older_deletes_only_what_was_not_stored_since(
    tmp_path: Path, stored: StoredImage
) -> None:
    store = LocalImageStore(tmp_path)
    await store.put(stored)
    path = store.path_for(stored.key)
    assert path is not None
    cutoff = time.time() - 60
    assert not await store.delete_if_older(stored.key, cutoff), "stored just now"
    assert path.is_file()
    os.utime(path, (cutoff - 10, cutoff - 10))
    assert await store.delete_if_older(stored.key, cutoff)
    assert not path.exists() and files_under(tmp_path) == []
    assert not await store.delete_if_older(stored.key, cutoff), "already gone"
    assert not await store.delete_if_older("../../etc/passwd", cutoff)


async def test_a_put_after_the_sweeper_looked_keeps_the_picture(
    tmp_path: Path, stored: StoredImage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race the grace period is for: the sweeper saw an old file, then a put of the
    same content touched it before the delete; the file stays, whole."""
    store = LocalImageStore(tmp_path)
    await store.put(stored)
    path = store.path_for(stored.key)
    assert path is not None
    cutoff = time.time() - 60
    os.utime(path, (cutoff - 10, cutoff - 10))
    real_rename = os.rename

    def rename_after_a_put(src: os.PathLike[str], dst: os.PathLike[str]) -> None:
        os.utime(src)  # the put's touch lands between the sweeper's look and its rename
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename_after_a_put)
    assert not await store.delete_if_older(stored.key, cutoff)
    assert path.read_bytes() == stored.data
    assert files_under(tmp_path) == [path], "nothing left aside"
