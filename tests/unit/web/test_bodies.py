"""actors.web.bodies: what the JSON API accepts as JSON, and the client's error messages."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request

from actors.web.bodies import require_json
from actors.web.views import PUBLIC_MESSAGES, error_response, public_message
from actors.wire import errors
from actors.wire.errors import UnsupportedMediaType


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "Application/JSON;charset=UTF-8"],
)
def test_json_is_accepted(content_type: str) -> None:
    require_json(make_mocked_request("POST", "/", headers={"Content-Type": content_type}))


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "",
        "text/plain",
        "text/plain; charset=utf-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/json; charset=latin-1",
        "application/json; boundary=x",
        "application/vnd.api+json",
        "application/jsonx",
    ],
)
def test_anything_else_is_415(content_type: str | None) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    with pytest.raises(UnsupportedMediaType):
        require_json(make_mocked_request("POST", "/", headers=headers))


def test_caller_errors_keep_their_words_others_get_a_fixed_sentence() -> None:
    assert public_message(errors.InvalidInput("nickname is too long")) == "nickname is too long"
    detail = "cannot reach MySQL: (2003, \"Can't connect to MySQL server on '10.0.0.5'\")"
    for cls in (errors.DatabaseUnavailable, errors.CacheUnavailable, errors.InternalError):
        message = public_message(cls(detail))
        assert message == PUBLIC_MESSAGES[cls.code]
        assert "MySQL" not in message and "10.0.0.5" not in message
    body = error_response(errors.DatabaseUnavailable(detail, field="x")).body
    assert isinstance(body, bytes) and b"MySQL" not in body and b'"field"' not in body


def test_a_code_without_a_sentence_of_its_own_still_tells_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delitem(PUBLIC_MESSAGES, "cache_unavailable")
    monkeypatch.delitem(PUBLIC_MESSAGES, "protocol_error")
    assert (
        public_message(errors.CacheUnavailable("Redis at 10.0.0.6"))
        == (PUBLIC_MESSAGES["unavailable"])
    )
    assert public_message(errors.ProtocolError("frame 12 bad")) == PUBLIC_MESSAGES["internal"]


def test_every_dependency_and_internal_code_has_a_sentence() -> None:
    for code, cls in errors.BY_CODE.items():
        if not issubclass(cls, errors.CallerError):
            assert code in PUBLIC_MESSAGES, code
