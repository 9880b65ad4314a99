"""The OpenAPI document at /api/v1/openapi.json is kept true.

* every /api/v1 route of the gateway's app is in the document, and nothing else is;
* every answer the integration tests got from /api/v1 (recorded by the ``http``
  fixture) and the answers of a walk through every flow here are described by it:
  a documented status, a body that validates against the documented schema;
* schemathesis, loading the document from the live gateway, generates requests for
  every operation (valid and invalid ones) and finds no server error, no undocumented
  status and no answer that breaks its schema.
"""

from __future__ import annotations

import io
import json
import uuid
from typing import TYPE_CHECKING, Any, cast

import aiohttp
import jsonschema_rs
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from PIL import Image
from requests.adapters import HTTPAdapter
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from actors import gateway
from actors.runtime.config import GatewayConfig
from actors.runtime.leasing import WorkerPool
from actors.web import openapi
from actors.web.image_store import LocalImageStore
from actors.web.services import Services
from actors.web.throttle import Throttles
from actors.web.upload_guard import UploadSlots
from tests.integration.conftest import API_ANSWERS, sign_up_and_log_in, unique_name
from tests.integration.tree import Tree

if TYPE_CHECKING:  # schemathesis's own names for an OpenAPI operation and its cases
    from schemathesis.specs.openapi.schemas import OpenApiCase, OpenApiOperation

pytestmark = pytest.mark.integration

DOC = openapi.document()
EXAMPLES_PER_OPERATION = 25


# -- the document against the app's routes -----------------------------------------------


def test_every_api_route_is_documented_and_nothing_else(
    tree: Tree, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in tree.env.items():
        monkeypatch.setenv(name, value)
    config = GatewayConfig.from_env()
    # Building the app registers its routes and calls no worker: the pools are never
    # reached, so they are None.
    services = Services(
        config=config,
        db=cast(WorkerPool, None),
        cache=cast(WorkerPool, None),
        images=LocalImageStore(config.image_dir),
        throttle=Throttles.from_config(config, cast(WorkerPool, None)),
        upload_slots=UploadSlots(config.uploads.concurrent),
    )
    app = gateway.build_app(services)
    routes = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
        and route.resource.canonical.startswith("/api/v1/")
        and route.method != "HEAD"  # aiohttp adds HEAD beside every GET
    }
    documented = {
        (method, path)
        for path, item in DOC["paths"].items()
        for method in item
        if method in {"get", "put", "post", "delete", "patch"}
    }
    assert routes == documented


async def test_the_live_document_is_the_module_one(http: aiohttp.ClientSession) -> None:
    async with http.get(openapi.PATH) as r:
        assert r.status == 200
        assert r.content_type == "application/json"
        assert await r.json() == json.loads(json.dumps(DOC))
    assert DOC["openapi"].startswith("3.1.")


# -- answers against the document ---------------------------------------------------------


_validators: dict[str, jsonschema_rs.Validator] = {}


def schema_problem(
    method: str, path: str, status: int, headers: dict[str, str], body: bytes
) -> str:
    """What is wrong with one answer as the document describes it ('' if nothing)."""
    item = DOC["paths"].get(path)
    if item is None or method.lower() not in item:
        return ""  # not an operation: the router's own 404/405
    responses = item[method.lower()]["responses"]
    described = responses.get(str(status))
    if described is None:
        return f"{method} {path}: status {status} is not documented ({sorted(responses)})"
    for name in described.get("headers", {}):
        if name.lower() != "set-cookie" and name.lower() not in headers:
            return f"{method} {path} {status}: header {name} missing"
    content = described.get("content")
    if not content:
        return f"{method} {path} {status}: a body was not expected" if body else ""
    media_type = headers.get("content-type", "").split(";")[0].strip()
    if media_type not in content:
        return f"{method} {path} {status}: content type {media_type!r} not in {list(content)}"
    schema = content[media_type]["schema"]
    key = json.dumps(schema, sort_keys=True)
    if key not in _validators:
        _validators[key] = jsonschema_rs.validator_for({**schema, "components": DOC["components"]})
    try:
        instance = json.loads(body)
    except ValueError:
        return f"{method} {path} {status}: the body is not JSON: {body[:200]!r}"
    errors = [e.message for e in _validators[key].iter_errors(instance)]
    return f"{method} {path} {status}: {errors} in {instance!r}"[:2000] if errors else ""


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 90)).save(buf, "PNG")
    return buf.getvalue()


async def walk_every_flow(http: aiohttp.ClientSession) -> None:
    """Every operation, with good and bad input, so each documented answer shows up."""
    account = await sign_up_and_log_in(http)
    auth = account.auth
    json_type = {"Content-Type": "application/json"}
    await http.post("/api/v1/users", json={"username": account.username, "password": "x" * 9,
                                           "nickname": "Dup"})  # fmt: skip
    await http.post("/api/v1/users", json={"username": "no", "password": "", "nickname": ""})
    await http.post("/api/v1/users", data=b"{broken", headers=json_type)
    await http.post("/api/v1/users", data=b"x" * 20_000, headers=json_type)
    await http.post("/api/v1/login", json={"username": account.username, "password": "wrong-1"})
    await http.post("/api/v1/login", json={"username": 5})
    await http.get("/api/v1/profile", headers=auth)
    await http.get("/api/v1/profile", headers={"Authorization": "Bearer " + "A" * 43})
    await http.put("/api/v1/profile/nickname", json={"nickname": "Walker"}, headers=auth)
    await http.put("/api/v1/profile/nickname", json={"nickname": "a\u202eb"}, headers=auth)
    form = aiohttp.FormData()
    form.add_field("avatar", png(), filename="a.png", content_type="image/png")
    await http.put("/api/v1/profile/avatar", data=form, headers=auth)
    form = aiohttp.FormData()
    form.add_field("avatar", b"not a picture", filename="a.png", content_type="image/png")
    await http.put("/api/v1/profile/avatar", data=form, headers=auth)
    await http.put("/api/v1/profile/avatar", json={"avatar": 1}, headers=auth)
    await http.post("/api/v1/logout", headers=auth)
    http.cookie_jar.clear()
    await http.post("/api/v1/logout")  # no session at all
    await http.get(openapi.PATH)
    for _ in range(8):  # enough failures on one pair for a 429
        await http.post("/api/v1/login", json={"username": account.username, "password": "bad-1"})


async def test_answers_of_every_flow_match_the_document(http: aiohttp.ClientSession) -> None:
    before = len(API_ANSWERS)
    await walk_every_flow(http)
    mine = API_ANSWERS[before:]
    statuses = {(method, path, status) for method, path, status, _, _ in mine}
    for expected in [
        ("POST", "/api/v1/users", 201), ("POST", "/api/v1/users", 409),
        ("POST", "/api/v1/users", 422), ("POST", "/api/v1/users", 400),
        ("POST", "/api/v1/users", 413), ("POST", "/api/v1/login", 200),
        ("POST", "/api/v1/login", 401), ("POST", "/api/v1/login", 429),
        ("GET", "/api/v1/profile", 200), ("GET", "/api/v1/profile", 401),
        ("PUT", "/api/v1/profile/nickname", 200), ("PUT", "/api/v1/profile/nickname", 422),
        ("PUT", "/api/v1/profile/avatar", 200), ("POST", "/api/v1/logout", 204),
        ("POST", "/api/v1/logout", 401), ("GET", openapi.PATH, 200),
    ]:  # fmt: skip
        assert expected in statuses, (expected, sorted(statuses))
    problems = [p for answer in mine if (p := schema_problem(*answer))]
    assert not problems, "\n".join(problems)


def test_answers_the_other_integration_tests_got_match_the_document() -> None:
    """Whatever ran before this in the session (test_api, test_http_abuse, ...)."""
    problems = [p for answer in list(API_ANSWERS) if (p := schema_problem(*answer))]
    assert not problems, "\n".join(problems[:20])


# -- schemathesis against the live gateway ---------------------------------------------------


class _FromOtherLoopback(HTTPAdapter):
    """Connections from 127.0.0.2: the login throttle counts failed logins per client
    address, and the generated logins (nearly all wrong) must not throttle the other
    tests, which log in from 127.0.0.1."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = ("127.0.0.2", 0)
        super().init_poolmanager(*args, **kwargs)


def _log_in(session: requests.Session, base_url: str) -> str:
    username, password = unique_name("st"), "pw-" + uuid.uuid4().hex
    body = {"username": username, "password": password, "nickname": "Generated"}
    r = session.post(f"{base_url}/api/v1/users", json=body, timeout=15)
    assert r.status_code == 201, r.text
    r = session.post(
        f"{base_url}/api/v1/login", json={"username": username, "password": password}, timeout=15
    )
    assert r.status_code == 200, r.text
    return str(r.json()["token"])


CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]


def fuzz_operation(
    operation: OpenApiOperation,
    mode: GenerationMode,
    session: requests.Session,
    base_url: str,
    token: str,
) -> None:
    secured = bool(operation.definition.raw.get("security"))
    logs_out = operation.path == "/api/v1/logout"

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    def check(case: OpenApiCase) -> None:
        headers = {}
        if secured:  # logging out spends a session: a fresh one for each call
            bearer = _log_in(session, base_url) if logs_out else token
            headers["Authorization"] = f"Bearer {bearer}"
        session.cookies.clear()
        case.call_and_validate(session=session, headers=headers, checks=CHECKS, timeout=15)

    check()


@pytest.mark.timeout(300)
def test_schemathesis_finds_nothing(tree: Tree) -> None:
    session = requests.Session()
    session.mount("http://", _FromOtherLoopback())
    schema = schemathesis.openapi.from_url(f"{tree.base_url}{openapi.PATH}", timeout=15)
    token = _log_in(session, tree.base_url)
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result.err()  # an operation it could not read
        operations.append(result.ok())
    assert {(op.method.upper(), op.path) for op in operations} >= {
        ("POST", "/api/v1/users"), ("POST", "/api/v1/login"), ("GET", "/api/v1/profile"),
        ("PUT", "/api/v1/profile/nickname"), ("PUT", "/api/v1/profile/avatar"),
        ("POST", "/api/v1/logout"),
    }  # fmt: skip
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzz_operation(operation, mode, session, tree.base_url, token)
