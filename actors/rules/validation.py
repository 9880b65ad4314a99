"""Input rules for usernames, nicknames and passwords.

Every value a client sends is checked with these functions, and what comes out is
the one canonical form the rest of the system stores and compares. The gateway
applies them first, so bad input gets its answer without costing a worker a
password hash; the db_worker applies them again before it writes, because it is
the record and must not depend on every caller having checked.
A rule refused raises :class:`~actors.wire.errors.InvalidInput` naming the field, so the
HTTP answer is a 422 that says which field is wrong and why.

Usernames
    * must be a string;
    * NFKC-normalised, surrounding whitespace stripped, lower-cased, so look-alikes
      such as full-width ``ａｌｉｃｅ`` or ``ALICE`` are the same account as ``alice``;
    * 3 to 30 characters, each one of ``a-z``, ``0-9``, ``_``, ``.`` and ``-``;
    * must start with a letter or a digit.

    The column is ASCII with a binary collation, so this form is also what makes the
    unique index mean "one account per name".

Nicknames
    * must be a string;
    * NFC-normalised (composed, never folded: a nickname is shown as written),
      surrounding whitespace stripped;
    * 1 to 30 characters, counted as Unicode code points (the column is
      ``VARCHAR(30)`` in utf8mb4, which counts the same way);
    * no control, surrogate, private-use or unassigned code points (categories
      ``Cc``, ``Cs``, ``Co``, ``Cn``); tabs and newlines are controls, so refused;
    * no line or paragraph separators (``Zl``, ``Zp``);
    * no bidi embedding, override or isolate characters (U+202A to U+202E,
      U+2066 to U+2069), which could make a nickname reorder the text around it;
    * at least one visible character: a nickname made only of spaces, format
      characters (such as zero-width spaces) and combining marks is refused;
    * spaces inside the nickname, even several in a row, are kept.

    "Unassigned" follows the Unicode database Python ships (``unicodedata``), so a
    character added in a newer Unicode version is refused until Python knows it.

Passwords (following NIST SP 800-63B)
    * must be a string;
    * NFC-normalised, so the same password typed on two keyboards hashes the same;
      it is never stripped or case-folded, every other character counts;
    * 8 to 128 characters, counted as code points after normalisation;
    * at most 512 bytes in UTF-8;
    * no control characters (category ``Cc``, NUL included) and no lone surrogates,
      which cannot be encoded and so cannot be hashed.

    :func:`check_password` returns the normalised password: sign-up must hash that
    value and login must verify that value, or a password typed in a different
    normalisation would not match.

Any input longer than :data:`MAX_RAW_CHARS` code points is refused before it is
normalised, so a huge value costs nothing to turn down.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

from actors.wire.errors import InvalidInput

USERNAME_MIN: Final = 3
USERNAME_MAX: Final = 30
NICKNAME_MIN: Final = 1
NICKNAME_MAX: Final = 30
PASSWORD_MIN: Final = 8
PASSWORD_MAX: Final = 128
PASSWORD_MAX_BYTES: Final = 512

#: Longest raw input looked at. Far above every limit, even with whitespace around it.
MAX_RAW_CHARS: Final = 1024

# \A ... \Z and an explicit ASCII class: ``$`` would accept a trailing newline and
# ``\w`` would accept any Unicode letter.
_USERNAME_CHARS = re.compile(r"\A[a-z0-9_.-]*\Z")
_USERNAME_START = re.compile(r"\A[a-z0-9]")

_NICKNAME_BAD_CATEGORIES: Final = frozenset({"Cc", "Cs", "Co", "Cn", "Zl", "Zp"})
_BIDI_CONTROLS: Final = frozenset(
    [chr(c) for c in range(0x202A, 0x202F)] + [chr(c) for c in range(0x2066, 0x206A)]
)
# What does not show on its own: separators, format characters and combining marks.
_INVISIBLE_CATEGORY_PREFIXES: Final = ("Z", "Cf", "M")


def _as_str(raw: object, field: str) -> str:
    """Refuse anything that is not text, and give back a plain ``str``.

    A ``str`` subclass could override methods the rules rely on; copying it into an
    exact ``str`` keeps what is stored independent of the caller's type.
    """
    if not isinstance(raw, str):
        raise InvalidInput(f"{field} must be a string", field=field)
    if type(raw) is not str:
        raw = str.__str__(raw)
    if len(raw) > MAX_RAW_CHARS:
        raise InvalidInput(f"{field} is far too long", field=field)
    return raw


def normalize_username(raw: object) -> str:
    """Return the canonical username, or raise :class:`InvalidInput` (field ``username``).

    NFKC before the character check folds compatibility forms (full-width letters,
    ligatures, the Kelvin sign) onto ASCII, so two accounts cannot differ only by
    such a form; the ASCII-only check afterwards refuses every other script.
    """
    text = _as_str(raw, "username")
    name = unicodedata.normalize("NFKC", text).strip().lower()
    if not USERNAME_MIN <= len(name) <= USERNAME_MAX:
        raise InvalidInput(
            f"username must be {USERNAME_MIN} to {USERNAME_MAX} characters long",
            field="username",
        )
    if not _USERNAME_CHARS.match(name):
        raise InvalidInput(
            "username may only contain the letters a-z, digits, '_', '.' and '-'",
            field="username",
        )
    if not _USERNAME_START.match(name):
        raise InvalidInput("username must start with a letter or a digit", field="username")
    return name


def normalize_nickname(raw: object) -> str:
    """Return the nickname to store and show, or raise :class:`InvalidInput` (``nickname``).

    Any script is welcome, but nothing that could break the page or the log line it
    is shown in: no controls, no line breaks, no bidi overrides.
    """
    text = _as_str(raw, "nickname")
    nick = unicodedata.normalize("NFC", text).strip()
    if not NICKNAME_MIN <= len(nick) <= NICKNAME_MAX:
        raise InvalidInput(
            f"nickname must be {NICKNAME_MIN} to {NICKNAME_MAX} characters long",
            field="nickname",
        )
    visible = False
    for ch in nick:
        category = unicodedata.category(ch)
        if category in _NICKNAME_BAD_CATEGORIES:
            raise InvalidInput(
                f"nickname may not contain control or invisible characters (U+{ord(ch):04X})",
                field="nickname",
            )
        if ch in _BIDI_CONTROLS:
            raise InvalidInput(
                f"nickname may not contain text direction controls (U+{ord(ch):04X})",
                field="nickname",
            )
        if not category.startswith(_INVISIBLE_CATEGORY_PREFIXES):
            visible = True
    if not visible:
        raise InvalidInput("nickname must contain a visible character", field="nickname")
    return nick


def check_password(raw: object) -> str:
    """Return the NFC-normalised password to hash, or raise :class:`InvalidInput` (``password``).

    Only length and encodability are checked, as NIST SP 800-63B advises: no
    composition rules, and spaces and every printable character are allowed.
    """
    text = _as_str(raw, "password")
    password = unicodedata.normalize("NFC", text)
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise InvalidInput(
            f"password must be {PASSWORD_MIN} to {PASSWORD_MAX} characters long",
            field="password",
        )
    for ch in password:
        category = unicodedata.category(ch)
        if category == "Cc":
            raise InvalidInput("password may not contain control characters", field="password")
        if category == "Cs":
            raise InvalidInput("password is not valid Unicode text", field="password")
    if len(password.encode("utf-8")) > PASSWORD_MAX_BYTES:
        raise InvalidInput(
            f"password must be at most {PASSWORD_MAX_BYTES} bytes in UTF-8", field="password"
        )
    return password
