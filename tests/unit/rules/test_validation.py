"""The username, nickname and password rules, one by one, then fuzzed."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.rules.validation import (
    MAX_RAW_CHARS,
    check_password,
    normalize_nickname,
    normalize_username,
)
from actors.wire.errors import InvalidInput

Validator = Callable[[object], str]
VALIDATORS: list[tuple[Validator, str]] = [
    (normalize_username, "username"),
    (normalize_nickname, "nickname"),
    (check_password, "password"),
]


def refused(validator: Validator, raw: object, field: str) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        validator(raw)
    assert caught.value.field == field
    assert caught.value.code == "invalid_input"
    return caught.value


# -- every validator ---------------------------------------------------------------------


@pytest.mark.parametrize(("validator", "field"), VALIDATORS)
@pytest.mark.parametrize("raw", [None, 42, 3.5, b"alice-bytes", ["alice"], {"a": 1}, True])
def test_non_strings_are_refused(validator: Validator, field: str, raw: object) -> None:
    error = refused(validator, raw, field)
    assert error.message == f"{field} must be a string"


@pytest.mark.parametrize(("validator", "field"), VALIDATORS)
def test_huge_input_is_refused_before_normalising(validator: Validator, field: str) -> None:
    refused(validator, "a" * (MAX_RAW_CHARS + 1), field)


@pytest.mark.parametrize(("validator", "field"), VALIDATORS)
def test_str_subclass_comes_back_as_plain_str(validator: Validator, field: str) -> None:
    class Sneaky(str):
        def lower(self) -> str:
            return "!!!"

    result = validator(Sneaky("Valid_name1"))
    assert type(result) is str


# -- usernames ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("alice", "alice"),
        ("  Alice  ", "alice"),
        ("ALICE_2024", "alice_2024"),
        ("a.b-c_d", "a.b-c_d"),
        ("0day", "0day"),
        ("ａｌｉｃｅ", "alice"),  # full-width forms fold under NFKC
        ("\u212aelvin", "kelvin"),  # KELVIN SIGN
        ("abc", "abc"),
        ("alice\n\n", "alice"),  # surrounding whitespace, newlines included, is stripped
        ("x" * 30, "x" * 30),
    ],
)
def test_username_accepted(raw: str, expected: str) -> None:
    assert normalize_username(raw) == expected


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ("", "3 to 30"),
        ("ab", "3 to 30"),
        ("   ab   ", "3 to 30"),
        ("x" * 31, "3 to 30"),
        ("al ice", "may only contain"),
        ("alice!", "may only contain"),
        ("alicé", "may only contain"),
        ("алиса", "may only contain"),
        ("ali\u200bce", "may only contain"),
        ("_alice", "start with a letter or a digit"),
        (".alice", "start with a letter or a digit"),
        ("-alice", "start with a letter or a digit"),
    ],
)
def test_username_refused(raw: str, needle: str) -> None:
    error = refused(normalize_username, raw, "username")
    assert needle in error.message


def test_username_newline_inside_is_refused() -> None:
    # A line-anchored regex would let a newline through; the rule must not.
    refused(normalize_username, "ab\nc", "username")


# -- nicknames ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Alice", "Alice"),
        ("  Alice  ", "Alice"),
        ("Alice   in   Wonderland", "Alice   in   Wonderland"),
        ("e\u0301tienne", "\u00e9tienne"),  # NFC composes
        ("ｆｕｌｌ", "ｆｕｌｌ"),  # not folded: NFC, not NFKC
        ("李小龙", "李小龙"),
        ("👩‍💻 dev", "👩‍💻 dev"),  # the ZWJ (Cf) inside an emoji sequence is fine
        ("x", "x"),
        ("🙂" * 30, "🙂" * 30),  # 30 code points, 120 bytes: fits VARCHAR(30) utf8mb4
    ],
)
def test_nickname_accepted(raw: str, expected: str) -> None:
    assert normalize_nickname(raw) == expected


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ("", "1 to 30"),
        ("     ", "1 to 30"),
        ("x" * 31, "1 to 30"),
        ("🙂" * 31, "1 to 30"),
        ("tab\there", "control"),
        ("new\nline", "control"),
        ("nul\x00", "control"),
        ("bell\x07", "control"),
        ("del\x7f", "control"),
        ("c1\x85inside", "control"),
        ("lone\ud800surrogate", "control"),
        ("private\ue000", "control"),
        ("unassigned\U000e0080", "control"),
        ("nonchar\uffff", "control"),
        ("line\u2028sep", "control"),
        ("para\u2029sep", "control"),
        ("evil\u202egnp.exe", "direction"),
        ("lre\u202a", "direction"),
        ("pdf\u202c", "direction"),
        ("isolate\u2066x\u2069", "direction"),
        ("fsi\u2068", "direction"),
        ("\u200b", "visible"),
        ("\u200b\u200b\u200d", "visible"),
        ("\u0301", "visible"),
    ],
)
def test_nickname_refused(raw: str, needle: str) -> None:
    error = refused(normalize_nickname, raw, "nickname")
    assert needle in error.message


# -- passwords ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("correct horse", "correct horse"),
        ("  spaces around  ", "  spaces around  "),  # never stripped
        ("CaseMatters", "CaseMatters"),
        ("pa\u0073\u0301word!", "pa\u015bword!"),  # NFC composes s + acute
        ("ｆｕｌｌｗｉｄｔｈ", "ｆｕｌｌｗｉｄｔｈ"),  # NFC, not NFKC
        ("x" * 8, "x" * 8),
        ("x" * 128, "x" * 128),
        ("🔑" * 128, "🔑" * 128),  # 128 characters, exactly 512 bytes
    ],
)
def test_password_accepted(raw: str, expected: str) -> None:
    assert check_password(raw) == expected


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ("", "8 to 128"),
        ("short", "8 to 128"),
        ("x" * 7, "8 to 128"),
        ("x" * 129, "8 to 128"),
        ("nul\x00inside", "control"),
        ("tab\tinside", "control"),
        ("newline\n", "control"),
        ("escape\x1b[0m", "control"),
        ("lone \udc80 surrogate", "Unicode"),
    ],
)
def test_password_refused(raw: str, needle: str) -> None:
    error = refused(check_password, raw, "password")
    assert needle in error.message


def test_password_message_never_echoes_the_password() -> None:
    secret = "hunter2\x00-secret"
    error = refused(check_password, secret, "password")
    assert "hunter2" not in error.message


def test_password_composed_and_decomposed_are_the_same() -> None:
    composed = "caf\u00e9-latte"
    decomposed = "cafe\u0301-latte"
    assert check_password(composed) == check_password(decomposed)


# -- fuzzing: a valid value or InvalidInput, nothing else ---------------------------------

USERNAME_RE = re.compile(r"\A[a-z0-9][a-z0-9_.-]{2,29}\Z")
BIDI = {chr(c) for c in [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]}

any_text = st.text(
    alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=()),
    max_size=200,
)
tricky_text = st.text(
    alphabet=st.sampled_from(
        list("aZ09_.- \t\n\r\x00\x7f\u00a0\u3000\u200b\u200d\u0301\ufeff\u212aｋé")
        + sorted(BIDI)
        + ["\u2028", "\u2029", "\ud800", "\ue000", "\uffff", "🙂", "\U000e0080"]
    ),
    max_size=40,
)
any_object = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.binary(max_size=40),
    st.lists(st.text(max_size=5), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)
anything = st.one_of(any_text, tricky_text, any_object)


@given(anything)
def test_username_fuzz(raw: object) -> None:
    try:
        name = normalize_username(raw)
    except InvalidInput as error:
        assert error.field == "username"
        return
    assert USERNAME_RE.match(name)
    assert normalize_username(name) == name


@given(anything)
def test_nickname_fuzz(raw: object) -> None:
    try:
        nick = normalize_nickname(raw)
    except InvalidInput as error:
        assert error.field == "nickname"
        return
    assert 1 <= len(nick) <= 30
    assert nick == nick.strip()
    assert unicodedata.is_normalized("NFC", nick)
    for ch in nick:
        assert unicodedata.category(ch) not in {"Cc", "Cs", "Co", "Cn", "Zl", "Zp"}
        assert ch not in BIDI
    nick.encode("utf-8")  # storable in utf8mb4
    assert normalize_nickname(nick) == nick


@given(anything)
def test_password_fuzz(raw: object) -> None:
    try:
        password = check_password(raw)
    except InvalidInput as error:
        assert error.field == "password"
        return
    assert 8 <= len(password) <= 128
    assert len(password.encode("utf-8")) <= 512
    assert unicodedata.is_normalized("NFC", password)
    assert not any(unicodedata.category(ch) in {"Cc", "Cs"} for ch in password)
    assert check_password(password) == password
