"""Picture keys: what a stored picture is named, and what such a name may look like.

A key is the SHA-256 of the re-encoded picture, in lowercase hex, with ``.png`` or
``.jpg``: the same picture always has the same key and a stored picture never
changes, which is what lets ``/avatars/{key}`` be cached for a year. The gateway
mints keys, the db_worker refuses anything else as an avatar, and the image store
refuses to map anything else to a path (so ``../../etc/passwd`` names nothing).
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

from actors.wire.errors import InvalidInput

#: A valid image key: 64 lower-case hex digits of SHA-256 and the output type.
KEY_RE: Final = re.compile(r"\A[0-9a-f]{64}\.(?:png|jpg)\Z")

CONTENT_TYPES: Final = {".png": "image/png", ".jpg": "image/jpeg"}


def is_key(value: object) -> bool:
    return isinstance(value, str) and KEY_RE.match(value) is not None


def key_for(data: bytes, ext: str) -> str:
    """The key of re-encoded picture bytes of type ``ext`` (".png" or ".jpg")."""
    if ext not in CONTENT_TYPES:
        raise ValueError(f"no picture type {ext!r}")
    return hashlib.sha256(data).hexdigest() + ext


def matches(key: str, data: bytes) -> bool:
    """Whether ``data`` is what ``key`` names."""
    return is_key(key) and hashlib.sha256(data).hexdigest() == key[:64]


def content_type_for_key(key: str) -> str:
    """The MIME type to serve a stored image with; a key that is not valid is refused."""
    if not is_key(key):
        raise InvalidInput("not a valid image key", field="avatar")
    return CONTENT_TYPES[key[-4:]]
