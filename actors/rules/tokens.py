"""Session tokens: 32 random bytes shown to the client once; only SHA-256 is kept."""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
import string

TOKEN_BYTES = 32
_TOKEN_CHARS = 43  # base64url of 32 bytes, unpadded
_ALPHABET = frozenset(string.ascii_letters + string.digits + "-_")


def new_token() -> tuple[str, str]:
    """A fresh token and its hash (hex), as sent to the client and as stored."""
    raw = secrets.token_bytes(TOKEN_BYTES)
    return _encode(raw), hashlib.sha256(raw).hexdigest()


def _encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def hash_token(token: str) -> str | None:
    """The stored form of a client's token, or None if it cannot be one of ours.

    Only the canonical spelling is accepted: the decoder would also take the standard
    alphabet's "+" and "/" and ignore the last character's two spare bits, which
    would give one session several valid tokens.
    """
    if len(token) != _TOKEN_CHARS or not _ALPHABET.issuperset(token):
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=")
    except (binascii.Error, ValueError):
        return None
    if len(raw) != TOKEN_BYTES or _encode(raw) != token:
        return None
    return hashlib.sha256(raw).hexdigest()


def is_token_hash(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)
