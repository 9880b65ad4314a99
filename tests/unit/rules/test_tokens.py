"""actors.rules.tokens: minted tokens hash back to what is stored; anything else is refused."""

from __future__ import annotations

import base64
import hashlib

import pytest

from actors.rules import tokens


def test_new_token_round_trips_to_its_stored_hash() -> None:
    token, stored = tokens.new_token()
    assert len(token) == 43
    assert token.isascii() and "=" not in token
    assert tokens.is_token_hash(stored)
    assert tokens.hash_token(token) == stored
    raw = base64.urlsafe_b64decode(token + "=")
    assert len(raw) == tokens.TOKEN_BYTES
    assert stored == hashlib.sha256(raw).hexdigest()


def test_new_tokens_are_distinct() -> None:
    minted = [tokens.new_token() for _ in range(200)]
    assert len({t for t, _ in minted}) == 200
    assert len({h for _, h in minted}) == 200
    assert all(tokens.hash_token(t) == h for t, h in minted)


def test_hash_token_is_deterministic_for_a_known_value() -> None:
    raw = bytes(range(32))
    token = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    assert tokens.hash_token(token) == hashlib.sha256(raw).hexdigest()


def _token_with(char: str, at: int = 10) -> str:
    token, _ = tokens.new_token()
    return token[:at] + char + token[at + 1 :]


@pytest.mark.parametrize("length", [0, 1, 42, 44, 64, 1000])
def test_hash_token_rejects_wrong_length(length: int) -> None:
    token, _ = tokens.new_token()
    candidate = (token * 30)[:length]
    assert tokens.hash_token(candidate) is None


@pytest.mark.parametrize("char", ["!", " ", ".", "=", "\0", "\n", "%", "*"])
def test_hash_token_rejects_characters_outside_base64url(char: str) -> None:
    assert tokens.hash_token(_token_with(char)) is None


@pytest.mark.parametrize("char", ["+", "/"])
def test_hash_token_rejects_the_standard_base64_alphabet(char: str) -> None:
    # "+" and "/" spell the same bytes as "-" and "_" to a lenient decoder; a token
    # must have one spelling only.
    assert tokens.hash_token(_token_with(char)) is None
    assert tokens.hash_token(char * 43) is None


@pytest.mark.parametrize("char", ["é", "ß", "Ａ", "😀", "\u200b"])
def test_hash_token_rejects_non_ascii(char: str) -> None:
    assert tokens.hash_token(_token_with(char)) is None
    assert tokens.hash_token(_token_with(char)[:42]) is None  # same code points, 42 chars


def test_hash_token_rejects_a_non_canonical_last_character() -> None:
    # 43 characters carry 258 bits for 32 bytes: the last one's two spare bits must be 0.
    canonical = "A" * 43
    assert tokens.hash_token(canonical) == hashlib.sha256(bytes(32)).hexdigest()
    for last in "BCD":
        assert tokens.hash_token("A" * 42 + last) is None


def test_hash_token_accepts_every_base64url_character() -> None:
    raw = bytes(range(0, 256, 8))  # 32 bytes covering the whole alphabet's range
    token = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    assert tokens.hash_token(token) == hashlib.sha256(raw).hexdigest()
    minted = [tokens.new_token()[0] for _ in range(300)]
    assert {"-", "_"} <= set("".join(minted))
    assert all(tokens.hash_token(t) is not None for t in minted)


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("0" * 64, True),
        ("0123456789abcdef" * 4, True),
        ("0123456789ABCDEF" * 4, False),
        ("g" * 64, False),
        ("0" * 63, False),
        ("0" * 65, False),
        ("", False),
    ],
)
def test_is_token_hash(value: str, ok: bool) -> None:
    assert tokens.is_token_hash(value) is ok
