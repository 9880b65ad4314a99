"""The JSON API described as an OpenAPI 3.1 document, served at GET /api/v1/openapi.json.

The document is the contract of README.md's API table in machine-readable form.
tests/integration/test_openapi.py keeps it true: every /api/v1 route of the app is in
it and nothing else is, the answers of the integration tests' flows validate against
it, and a property-based run against a live tree finds no answer it does not describe
and no server error.
"""

from __future__ import annotations

import json
from typing import Any, Final

from aiohttp import web

from actors.rules import validation
from actors.web import images
from actors.web.bodies import MAX_JSON_BYTES

PATH: Final = "/api/v1/openapi.json"


def _json(schema_ref: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": _json("Error")}


def _retry_error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "headers": {"Retry-After": {"$ref": "#/components/headers/RetryAfter"}},
        "content": _json("Error"),
    }


# Answers any route may give: the service's own trouble (a dependency down, a deadline
# passed), which clients may retry. Their message is a fixed sentence per code.
_COMMON: Final[dict[str, Any]] = {
    "503": _retry_error("A worker, MariaDB or Redis is unavailable; retry after Retry-After."),
    "504": _retry_error("The request's deadline passed inside the service; retry."),
}
_BODY_ERRORS: Final[dict[str, Any]] = {
    "400": _error("The body is not valid JSON (or not UTF-8)."),
    "408": _error("The body did not arrive in time."),
    "413": _error(f"The body is larger than {MAX_JSON_BYTES} bytes."),
    "415": _error(
        "The body is not declared `Content-Type: application/json` (a UTF-8 charset "
        "parameter is allowed, nothing else)."
    ),
    "422": _error("A field is missing or breaks the input rules; `field` names it."),
}
# Writes a browser could be made to send by a page of another site.
_CROSS_SITE: Final[dict[str, Any]] = {
    "403": _error(
        "`csrf_failed`: the browser says a page of another site sent this request "
        "(`Sec-Fetch-Site: cross-site`, or an `Origin` of another host or `null`). "
        "Not checked for requests with an `Authorization` header."
    ),
}
_AUTH_ERRORS: Final[dict[str, Any]] = {
    "401": _error("No session, or the token is unknown, expired or logged out."),
}

_IDEMPOTENCY_KEY: Final[dict[str, Any]] = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "A write repeated with the same key is applied once. 1-64 printable "
    "ASCII characters; anything else is refused with 422.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[ -~]+$"},
}

_SECURED: Final[list[dict[str, list[str]]]] = [{"bearer": []}, {"cookie": []}]


def _json_body(schema_ref: str) -> dict[str, Any]:
    return {"required": True, "content": _json(schema_ref)}


def document() -> dict[str, Any]:
    """The whole OpenAPI 3.1 document (a fresh dict: callers may change their copy)."""
    profile = {"description": "The account's profile.", "content": _json("Profile")}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "userhub",
            "version": "1",
            "description": "Sign up, log in, read and change a profile, upload a picture, "
            'log out. Errors are JSON `{"error": {"code", "message", "field"?}}` '
            "with stable codes; every answer carries `X-Request-ID`.",
        },
        "paths": {
            "/api/v1/users": {
                "post": {
                    "operationId": "signUp",
                    "summary": "Create an account.",
                    "parameters": [_IDEMPOTENCY_KEY],
                    "requestBody": _json_body("SignUp"),
                    "responses": {
                        "201": profile,
                        "409": _error("The username is taken (compared after normalising)."),
                        "429": _retry_error(
                            "Too many sign-ups from this address; retry after Retry-After."
                        ),
                        **_CROSS_SITE,
                        **_BODY_ERRORS,
                        **_COMMON,
                    },
                }
            },
            "/api/v1/login": {
                "post": {
                    "operationId": "logIn",
                    "summary": "Log in: a bearer token, also set as the session cookie.",
                    "requestBody": _json_body("Credentials"),
                    "responses": {
                        "200": {
                            "description": "Logged in.",
                            "headers": {
                                "Set-Cookie": {
                                    "description": "The session cookie (HttpOnly, SameSite=Lax) "
                                    "and the known-device cookie, which exempts this client from "
                                    "the account-wide login throttle.",
                                    "schema": {"type": "string"},
                                }
                            },
                            "content": _json("LoginResult"),
                        },
                        "401": _error("Wrong username or password (the same answer for both)."),
                        "429": _retry_error(
                            "Too many login attempts; retry after Retry-After (it doubles while "
                            "failures go on)."
                        ),
                        **_CROSS_SITE,
                        **_BODY_ERRORS,
                        **_COMMON,
                    },
                }
            },
            "/api/v1/profile": {
                "get": {
                    "operationId": "getProfile",
                    "summary": "The caller's profile.",
                    "security": _SECURED,
                    "responses": {"200": profile, **_AUTH_ERRORS, **_COMMON},
                }
            },
            "/api/v1/profile/nickname": {
                "put": {
                    "operationId": "setNickname",
                    "summary": "Change the nickname.",
                    "security": _SECURED,
                    "parameters": [_IDEMPOTENCY_KEY],
                    "requestBody": _json_body("NicknameChange"),
                    "responses": {
                        "200": profile,
                        **_AUTH_ERRORS,
                        **_CROSS_SITE,
                        **_BODY_ERRORS,
                        **_COMMON,
                    },
                }
            },
            "/api/v1/profile/avatar": {
                "put": {
                    "operationId": "setAvatar",
                    "summary": "Upload a profile picture.",
                    "description": "The session is checked before the body is read: a dead "
                    "one gets 401 and nothing is read or stored. Uploads are limited per "
                    "account (429) and in number at once per gateway (503 `busy`, with "
                    "Retry-After).",
                    "security": _SECURED,
                    "parameters": [_IDEMPOTENCY_KEY],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "multipart/form-data": {
                                "schema": {"$ref": "#/components/schemas/AvatarUpload"},
                                "encoding": {
                                    "avatar": {
                                        "contentType": "image/png, image/jpeg, image/gif, "
                                        "image/webp"
                                    }
                                },
                            }
                        },
                    },
                    "responses": {
                        "200": profile,
                        **_AUTH_ERRORS,
                        **_CROSS_SITE,
                        "400": _error("The multipart body is malformed."),
                        "408": _error("The upload did not arrive in time."),
                        "413": _error(
                            f"The picture is larger than {images.MAX_UPLOAD_BYTES} bytes."
                        ),
                        "415": _error("Not a PNG, JPEG, GIF or WebP picture."),
                        "422": _error(
                            "No `avatar` field, or a picture that does not decode or is "
                            "too large in pixels."
                        ),
                        "429": _retry_error(
                            "Too many uploads for this account; retry after Retry-After."
                        ),
                        **_COMMON,
                    },
                }
            },
            "/api/v1/logout": {
                "post": {
                    "operationId": "logOut",
                    "summary": "End the session (everywhere) and clear the cookie.",
                    "description": "204 only once no worker can serve the token again. A 503"
                    " (`cache_unavailable`) means the log out is not final yet: send it"
                    " again after Retry-After.",
                    "security": _SECURED,
                    "responses": {
                        "204": {"description": "Logged out."},
                        **_AUTH_ERRORS,
                        **_CROSS_SITE,
                        **_COMMON,
                    },
                }
            },
            PATH: {
                "get": {
                    "operationId": "getOpenApi",
                    "summary": "This document.",
                    "responses": {
                        "200": {
                            "description": "The OpenAPI 3.1 document of this API.",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The token from POST /api/v1/login.",
                },
                "cookie": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "userhub_session",
                    "description": "The session cookie set by log in (`__Host-userhub_session` "
                    "when served over TLS).",
                },
            },
            "headers": {
                "RetryAfter": {
                    "description": "Seconds to wait before trying again.",
                    "schema": {"type": "string", "pattern": "^[0-9]+$"},
                }
            },
            "schemas": _schemas(),
        },
    }


def _schemas() -> dict[str, Any]:
    username = {
        "type": "string",
        "description": f"{validation.USERNAME_MIN}-{validation.USERNAME_MAX} characters of "
        "a-z 0-9 _ . - after NFKC and lower-casing, starting with a letter or digit; "
        "look-alikes (full-width, upper case) name the same account.",
    }
    nickname = {
        "type": "string",
        "description": f"{validation.NICKNAME_MIN}-{validation.NICKNAME_MAX} characters "
        "after NFC; no control, bidi-override or unassigned characters.",
    }
    password = {
        "type": "string",
        "description": f"{validation.PASSWORD_MIN}-{validation.PASSWORD_MAX} characters "
        f"after NFC, at most {validation.PASSWORD_MAX_BYTES} bytes, no control characters.",
    }
    return {
        "SignUp": {
            "type": "object",
            "required": ["username", "password", "nickname"],
            "properties": {"username": username, "password": password, "nickname": nickname},
        },
        "Credentials": {
            "type": "object",
            "required": ["username", "password"],
            "properties": {"username": {"type": "string"}, "password": {"type": "string"}},
        },
        "NicknameChange": {
            "type": "object",
            "required": ["nickname"],
            "properties": {"nickname": nickname},
        },
        "AvatarUpload": {
            "type": "object",
            "required": ["avatar"],
            "properties": {
                "avatar": {
                    "type": "string",
                    "contentMediaType": "application/octet-stream",
                    "description": "PNG, JPEG, GIF or WebP, at most "
                    f"{images.MAX_UPLOAD_BYTES} bytes and 16 megapixels; stored re-encoded.",
                }
            },
        },
        "Profile": {
            "type": "object",
            "required": ["username", "nickname", "avatar_url", "member_since"],
            "additionalProperties": False,
            "properties": {
                "username": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_.-]{2,29}$"},
                "nickname": {"type": "string", "minLength": 1, "maxLength": 30},
                "avatar_url": {
                    "type": ["string", "null"],
                    "pattern": "^/avatars/[0-9a-f]{64}\\.(png|jpg)$",
                },
                "member_since": {
                    "type": "string",
                    "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$",
                },
            },
        },
        "LoginResult": {
            "type": "object",
            "required": ["token", "user", "expires_at", "idle_timeout_s"],
            "additionalProperties": False,
            "properties": {
                "token": {"type": "string", "pattern": "^[A-Za-z0-9_-]{43}$"},
                "user": {"$ref": "#/components/schemas/Profile"},
                "expires_at": {"type": "number", "description": "Unix time, seconds."},
                "idle_timeout_s": {"type": "number"},
            },
        },
        "Error": {
            "type": "object",
            "required": ["error"],
            "additionalProperties": False,
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "additionalProperties": False,
                    "properties": {
                        "code": {"type": "string", "pattern": "^[a-z_]+$"},
                        "message": {"type": "string"},
                        "field": {"type": "string"},
                    },
                }
            },
        },
    }


_BODY: Final = json.dumps(document(), ensure_ascii=False).encode()


async def serve(request: web.Request) -> web.Response:
    return web.Response(body=_BODY, content_type="application/json")
