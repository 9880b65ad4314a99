"""actors.rules.image_keys: what a picture key looks like, and what it is served as."""

from __future__ import annotations

import hashlib

import pytest

from actors.rules.image_keys import KEY_RE, content_type_for_key, is_key, key_for, matches
from actors.wire.errors import InvalidInput


def test_keys_and_content_types() -> None:
    hex64 = "ab" * 32
    assert content_type_for_key(hex64 + ".png") == "image/png"
    assert content_type_for_key(hex64 + ".jpg") == "image/jpeg"
    for bad in [hex64 + ".gif", hex64.upper() + ".png", hex64[:-1] + ".png", hex64 + ".png\n", ""]:
        assert not KEY_RE.match(bad)
        with pytest.raises(InvalidInput):
            content_type_for_key(bad)


def test_a_key_is_the_hash_of_the_bytes_it_names() -> None:
    data = b"picture bytes"
    key = key_for(data, ".png")
    assert key == hashlib.sha256(data).hexdigest() + ".png"
    assert is_key(key) and matches(key, data)
    assert not matches(key, data + b"!")
    assert not matches("nope", data)
    with pytest.raises(ValueError):
        key_for(data, ".gif")


@pytest.mark.parametrize("value", [None, 7, b"ab" * 32, "../../etc/passwd", "ab" * 32])
def test_anything_else_is_not_a_key(value: object) -> None:
    assert not is_key(value)
