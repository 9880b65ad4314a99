"""Where validated pictures live: content-addressed, written once, read by key.

:class:`LocalImageStore` keeps files in a local directory, the embedded default;
any object with the methods of :class:`ImageStore` (an S3-compatible store, say)
can take its place. Keys come from :mod:`actors.rules.image_keys`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from pathlib import Path
from typing import Protocol, runtime_checkable

from actors.rules import image_keys
from actors.web.images import StoredImage


@runtime_checkable
class ImageStore(Protocol):
    """Where validated pictures live; keys come from :func:`validate_avatar`."""

    async def put(self, image: StoredImage) -> None:
        """Store the image under its key; storing the same key again is a no-op."""
        ...

    async def get(self, key: str) -> bytes | None:
        """The stored bytes, or ``None`` when the key is unknown or not a valid key."""
        ...

    async def exists(self, key: str) -> bool:
        """Whether an image is stored under this key."""
        ...


class LocalImageStore:
    """Content-addressed files under ``root``, fanned out as ``root/ab/cd/<key>``.

    Two levels of two hex digits keep each directory small (65,536 leaf directories)
    however many pictures there are. Writes go to a temporary file in the same
    directory, are flushed to disk and then renamed over the final name, so a reader
    sees the whole file or none of it, even across a crash. File I/O runs in a thread
    so the event loop never waits on the disk.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self._root = Path(root)

    @property
    def root(self) -> Path:
        return self._root

    def path_for(self, key: str) -> Path | None:
        """The file a key maps to, or ``None`` for anything that is not a valid key.

        Checking the key's shape is also what keeps a key taken from a URL
        (``../../etc/passwd``) from naming a path outside ``root``.
        """
        if not image_keys.is_key(key):
            return None
        return self._root / key[0:2] / key[2:4] / key

    async def put(self, image: StoredImage) -> None:
        """Store ``image``; a bad key or data not matching it is a bug: ValueError."""
        path = self.path_for(image.key)
        if path is None:
            raise ValueError(f"not a valid image key: {image.key!r}")
        if not image_keys.matches(image.key, image.data):
            raise ValueError("image data does not match its key")
        await asyncio.to_thread(_write_once, path, image.data)

    async def get(self, key: str) -> bytes | None:
        path = self.path_for(key)
        if path is None:
            return None
        return await asyncio.to_thread(_read_or_none, path)

    async def exists(self, key: str) -> bool:
        path = self.path_for(key)
        if path is None:
            return False
        return await asyncio.to_thread(path.is_file)


def _write_once(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, unless it is already there.

    The key is the hash of the content, so a file that exists already holds these
    very bytes and is left alone.
    """
    if path.is_file():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.chmod(tmp_name, 0o644)  # mkstemp's 0600 would hide it from a static file server
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable: the database will soon point at this file."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a directory; the rename still happened
    finally:
        os.close(fd)


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
