"""Part two's handlers in the three modes: the same decisions, and 429 passed on everywhere.

One rule file (Oathkeeper's JSON) with `claims`, `ory_permissions` (the Keto
stand-in), `remote_json` and `remote` (pytest-httpserver as the service) and
the `hydrator` mutator feeding an `id_token` claim, served by the proxy under
gunicorn, by nginx `auth_request` asking the decisions endpoint, and by a
Flask app with the embedded middleware (tests/test_pipeline_modes.py's
`serving`). The servers are started once per mode for this module; each test
makes its own identities, tuples and service answers.

A 429 from any service behind a handler (Kratos, Keto, the remote APIs, the
hydrator's API) is answered 429 with the service's `Retry-After` by the proxy
and the middleware. The decisions endpoint may only answer 200/401/403
(SPEC §16): it answers 403 with `X-Ory-Error: rate_limited` and the same
`Retry-After`, and nginx refuses the request.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from joserfc import jwt
from ory_flows import PASSWORD
from pytest_httpserver import HTTPServer
from servers import ThreadedServer
from test_pipeline_modes import HOST, Mode, serving
from werkzeug.wrappers import Request, Response

from ory_wsgi.testing import FakeKratos
from ory_wsgi.testing.keto import FakeKeto, FakeKetoServer
from ory_wsgi.testing.server import FakeKratosServer

ENABLED = """
[access_rules]
repositories = ["{rules}"]
[authenticators.cookie_session]
enabled = true
[authorizers.allow]
enabled = true
[authorizers.claims]
enabled = true
[authorizers.ory_permissions]
enabled = true
[authorizers.remote_json]
enabled = true
[authorizers.remote]
enabled = true
[mutators.hydrator]
enabled = true
[mutators.id_token]
enabled = true
[errors.handlers.json]
enabled = true
"""
PLAN_TOKEN = {"handler": "id_token", "config": {"claims": '{"plan": "{{ print .Extra.plan }}"}'}}
BODY = json.dumps({"amount": 12, "to": "acct-7"}).encode()


def rule(name: str, method: str, path: str, authorizer: dict[str, Any], *mutators: Any) -> Any:
    return {
        "id": name,
        "match": {"methods": [method], "url": f"<https?>://{HOST}{path}"},
        "authenticators": [{"handler": "cookie_session"}],
        "authorizer": authorizer,
        "mutators": list(mutators) or [PLAN_TOKEN],
    }


def part_two_rules(keto: str, service: str) -> list[Any]:
    # Groups 0 and 1 are the scheme's and the host's <...>.
    capture = "{{ printIndex .MatchContext.RegexpCaptureGroups 2 }}"
    return [
        rule(
            "admin",
            "GET",
            "/admin<.*>",
            {
                "handler": "claims",
                "config": {"require": {"identity.traits.email": ["ada@example.com"]}},
            },
        ),
        rule(
            "docs",
            "GET",
            "/docs/<[^/]+>",
            {
                "handler": "ory_permissions",
                "config": {
                    "url": keto,
                    "namespace": "documents",
                    "object": capture,
                    "relation": "view",
                    "subject_id": "{{ print .Subject }}",
                },
            },
        ),
        rule(
            "reports",
            "GET",
            "/reports/<[^/]+>",
            {
                "handler": "remote_json",
                "config": {
                    "remote": f"{service}/json-check",
                    "payload": '{"subject": "{{ print .Subject }}", "report": "' + capture + '"}',
                    "forward_response_headers_to_upstream": ["X-Tenant"],
                },
            },
        ),
        rule(
            "pay",
            "POST",
            "/pay<.*>",
            {
                "handler": "remote",
                "config": {
                    "remote": f"{service}/remote-check",
                    "headers": {"X-Subject": "{{ print .Subject }}"},
                },
            },
        ),
        rule(
            "profile",
            "GET",
            "/profile<.*>",
            {"handler": "allow"},
            {"handler": "hydrator", "config": {"api": {"url": f"{service}/hydrate"}}},
            PLAN_TOKEN,
        ),
    ]


@pytest.fixture(scope="module", params=["proxy", "nginx", "flask"])
def served(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    upstream: ThreadedServer,
    fake_ory_server: FakeKratosServer,
    fake_keto_server: FakeKetoServer,
    make_httpserver: HTTPServer,
) -> Iterator[Mode]:
    service = make_httpserver.url_for("").rstrip("/")

    def writer(directory: Path, public: str) -> Path:
        path = directory / "rules.json"
        path.write_text(json.dumps(part_two_rules(fake_keto_server.url, service)))
        return path

    tmp = tmp_path_factory.mktemp(request.param)
    with serving(request.param, tmp, upstream, fake_ory_server.kratos.url, writer, ENABLED) as mode:
        yield mode


def login(fake_ory: FakeKratos, email: str) -> tuple[str, dict[str, str]]:
    identity = fake_ory.add_identity(email, PASSWORD)
    _, token = fake_ory.create_session(identity["id"])
    cookie = "; ".join(f"{k}={v}" for k, v in fake_ory.cookies(token).items())
    return str(identity["id"]), {"Cookie": cookie}


class RemoteApis:
    """The remote APIs: what they were sent, and how they decide."""

    def __init__(self, server: HTTPServer, ada: str) -> None:
        self.ada = ada
        self.judged: list[tuple[bytes, str]] = []
        server.expect_request("/json-check", method="POST").respond_with_handler(self.json_check)
        server.expect_request("/remote-check", method="POST").respond_with_handler(self.remote)
        server.expect_request("/hydrate", method="POST").respond_with_handler(self.hydrate)

    def json_check(self, request: Request) -> Response:
        report = request.get_json()["report"]
        tenant = {"X-Tenant": "acme"} if report == "q1" else {}
        return Response("", 200 if report in ("q1", "q3") else 403, headers=tenant)

    def remote(self, request: Request) -> Response:
        self.judged.append((request.get_data(), request.headers.get("Content-Type", "")))
        return Response("", 200 if request.headers.get("X-Subject") == self.ada else 403)

    def hydrate(self, request: Request) -> Response:
        session = json.loads(request.get_data())
        plan = "gold" if session["subject"] == self.ada else "basic"
        return Response(json.dumps({"extra": {"plan": plan}}), 200, mimetype="application/json")


def test_part_two_handlers_decide_alike_in_every_mode(
    served: Mode, fake_ory: FakeKratos, fake_keto: FakeKeto, httpserver: HTTPServer
) -> None:
    ada, as_ada = login(fake_ory, "ada@example.com")
    bob, as_bob = login(fake_ory, "bob@example.com")
    fake_keto.add("documents", "doc-1", "view", subject_id=ada)
    apis = RemoteApis(httpserver, ada)
    json_body = {"Content-Type": "application/json"}
    cases: list[tuple[str, str, dict[str, str], int, str | None]] = [
        ("GET", "/admin/x", as_ada, 200, ""),
        ("GET", "/admin/x", as_bob, 403, None),
        ("GET", "/admin/x", {}, 401, None),
        ("GET", "/docs/doc-1", as_ada, 200, ""),
        ("GET", "/docs/doc-2", as_ada, 403, None),
        ("GET", "/docs/doc-1", as_bob, 403, None),
        ("GET", "/reports/q1", as_ada, 200, ""),
        ("GET", "/reports/q2", as_ada, 403, None),
        # The service names no tenant: the client's own X-Tenant must not pass as its.
        ("GET", "/reports/q3", {**as_ada, "X-Tenant": "evil"}, 200, ""),
        ("POST", "/pay/now", {**as_ada, **json_body}, 200, ""),
        ("POST", "/pay/now", {**as_bob, **json_body}, 403, None),
        ("GET", "/profile", as_ada, 200, "gold"),
        ("GET", "/profile", as_bob, 200, "basic"),
    ]
    for method, path, headers, status, plan in cases:
        data = BODY if method == "POST" else b""
        got, body, _ = served.send(method, path, headers, data)
        assert got == status, (served.name, method, path)
        if status != 200:
            continue
        echoed = json.loads(body)
        token = echoed["headers"]["Authorization"].removeprefix("Bearer ")
        claims = jwt.decode(token, served.keys, algorithms=["ES256"]).claims
        assert (claims["sub"], claims.get("plan")) == (bob if plan == "basic" else ada, plan)
        if path.startswith("/reports/") and served.relays_headers:
            tenant = echoed["headers"].get("X-Tenant", "")
            assert tenant == ("acme" if path == "/reports/q1" else ""), (served.name, path)
        if method == "POST":
            # What the app receives is what was sent (and, but for the gateway, judged).
            assert echoed["sha256"] == hashlib.sha256(BODY).hexdigest()
    # The remote service judged the body through the proxy and the middleware; a gateway
    # keeps it, so the decisions endpoint sends none (docs/rules-handlers.md).
    sent = BODY if served.name != "nginx" else b""
    assert apis.judged == [(sent, "application/json")] * 2


RATE_LIMITED = {
    "session": ("GET", "/admin/x"),
    "ory_permissions": ("GET", "/docs/doc-limited"),
    "remote_json": ("GET", "/reports/q1"),
    "remote": ("POST", "/pay/now"),
    "hydrator": ("GET", "/profile"),
}


@pytest.mark.parametrize("kind", list(RATE_LIMITED))
def test_a_429_from_the_service_is_passed_on_with_its_retry_after(
    served: Mode, kind: str, fake_ory: FakeKratos, fake_keto: FakeKeto, httpserver: HTTPServer
) -> None:
    ada, as_ada = login(fake_ory, "ada@example.com")
    fake_keto.add("documents", "doc-limited", "view", subject_id=ada)
    RemoteApis(httpserver, ada)
    if kind == "session":
        fake_ory.fail_whoami(429, retry_after="7")
    elif kind == "ory_permissions":
        fake_keto.fail_checks(429, retry_after="7")
    else:
        path = {"remote_json": "/json-check", "remote": "/remote-check", "hydrator": "/hydrate"}
        httpserver.clear()
        httpserver.expect_request(path[kind]).respond_with_data(
            "", 429, headers={"Retry-After": "7"}
        )
    method, target = RATE_LIMITED[kind]
    status, _, headers = served.send(method, target, as_ada, BODY if method == "POST" else b"")
    if served.decisions:
        assert status == 403  # the gateway refuses; the decision says why
        asked = requests.get(
            f"{served.decisions}/.ory/proxy/decisions",
            headers={
                **as_ada,
                "X-Forwarded-Method": method,
                "X-Forwarded-Proto": "http",
                "X-Forwarded-Host": "app.example.com",
                "X-Forwarded-Uri": target,
            },
            timeout=10,
        )
        assert asked.status_code == 403, kind
        assert asked.headers["X-Ory-Error"] == "rate_limited", kind
        assert asked.headers["Retry-After"] == "7", kind
    else:
        assert status == 429, (served.name, kind)
        assert headers["Retry-After"] == "7", (served.name, kind)
