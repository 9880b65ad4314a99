"""Where validated pictures live: content-addressed, written once, read by key.

:class:`LocalImageStore` keeps files in a local directory, the embedded default;
any object with the methods of :class:`ImageStore` (an S3-compatible store, say)
can take its place. Keys come from :mod:`actors.rules.image_keys`.

Storing a key that is already there refreshes its modification time. The orphan
sweeper (actors.web.avatar_sweeper) deletes only pictures that no account
references *and* that were last stored more than a grace period ago, so an upload
whose profile change has not committed yet is never swept from under it, even when
its picture was already stored (same content, same key) and unreferenced. The
listing and the conditional delete the sweeper uses map onto S3's ListObjectsV2
(``StartAfter``, ``MaxKeys``, ``LastModified``) and a HEAD before a DELETE.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from actors.rules import image_keys
from actors.web.images import StoredImage


@dataclass(frozen=True, slots=True)
class Listed:
    """One stored picture as a listing shows it."""

    key: str
    modified: float  # Unix time it was last stored (put)


@runtime_checkable
class ImageStore(Protocol):
    """Where validated pictures live; keys come from :func:`validate_avatar`."""

    async def put(self, image: StoredImage) -> None:
        """Store the image under its key; storing the same key again only refreshes
        its modification time."""
        ...

    async def get(self, key: str) -> bytes | None:
        """The stored bytes, or ``None`` when the key is unknown or not a valid key."""
        ...

    async def exists(self, key: str) -> bool:
        """Whether an image is stored under this key."""
        ...

    async def list_after(self, after: str, limit: int) -> list[Listed]:
        """Up to ``limit`` stored pictures with keys greater than ``after``, by key."""
        ...

    async def delete_if_older(self, key: str, cutoff: float) -> bool:
        """Delete the picture unless it was stored at or after ``cutoff``; True if gone."""
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

    async def list_after(self, after: str, limit: int) -> list[Listed]:
        return await asyncio.to_thread(self._list_after, after, limit)

    async def delete_if_older(self, key: str, cutoff: float) -> bool:
        path = self.path_for(key)
        if path is None:
            return False
        return await asyncio.to_thread(_delete_if_older, path, cutoff)

    def _list_after(self, after: str, limit: int) -> list[Listed]:
        """Walk root/ab/cd/ in key order from ``after``'s directories on; the fan-out
        keeps every directory read small, and the walk stops at ``limit`` keys."""
        found: list[Listed] = []
        if limit <= 0:
            return found
        for top in _subdirs(self._root, after[0:2]):
            for mid in _subdirs(self._root / top, after[2:4] if top == after[0:2] else ""):
                directory = self._root / top / mid
                try:
                    names = sorted(os.listdir(directory))
                except (FileNotFoundError, NotADirectoryError):
                    continue
                for name in names:
                    if name <= after or not image_keys.is_key(name) or name[:4] != top + mid:
                        continue
                    try:
                        modified = (directory / name).stat().st_mtime
                    except FileNotFoundError:
                        continue  # deleted meanwhile
                    found.append(Listed(name, modified))
                    if len(found) >= limit:
                        return found
        return found


def _write_once(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, unless it is already there.

    The key is the hash of the content, so a file that exists already holds these
    very bytes: only its modification time is set to now, which restarts the
    sweeper's grace period (see the module's docstring). A file the sweeper moved
    aside between the check and the touch is written anew.
    """
    try:
        os.utime(path)
        return
    except FileNotFoundError:
        pass
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


def _subdirs(directory: Path, start: str) -> list[str]:
    """The two-hex-digit fan-out directories of ``directory`` from ``start`` on, sorted."""
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(n for n in names if len(n) == 2 and n >= start and _is_hex(n))


def _is_hex(name: str) -> bool:
    return all(c in "0123456789abcdef" for c in name)


def _delete_if_older(path: Path, cutoff: float) -> bool:
    """Delete ``path`` unless it was stored (or touched by a put) at or after ``cutoff``.

    The file is first renamed aside, atomically: from then on a put of the same key
    finds no file and writes one anew, so no put can land between the last look at
    the modification time and the unlink. If the aside copy turns out to be fresh
    (a put touched it just before the rename) it is moved back.
    """
    aside = path.with_name(f".sweep-{path.name}")
    try:
        if path.stat().st_mtime >= cutoff:
            return False
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    if aside.stat().st_mtime >= cutoff:
        os.replace(aside, path)  # the same bytes as any put's, whichever landed last
        return False
    aside.unlink()
    return True
