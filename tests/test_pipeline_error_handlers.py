"""Error handlers in-process: json, redirect, www_authenticate and their `when` clauses."""

from __future__ import annotations

import json
from typing import Any

import pytest
from werkzeug.datastructures import Headers
from werkzeug.test import Client, TestResponse

from ory_wsgi.errors import ConfigError
from ory_wsgi.paths import normalise_path
from ory_wsgi.pipeline.error_handlers import ERROR_HANDLERS
from ory_wsgi.pipeline.errors import DecisionError
from ory_wsgi.pipeline.services import Services
from ory_wsgi.pipeline.state import RequestFacts
from ory_wsgi.settings import ProxySettings, Settings

PUBLIC = "https://app.example.com"
WHERE = 'rule "r1" errors[0]'
TRUSTED = ("10.0.0.0/8",)


def make_services() -> Services:
    settings = Settings(proxy=ProxySettings(trusted_proxies=TRUSTED))
    return Services(settings, PUBLIC, None, None, None, frozenset())


def facts(
    target: str = "/test",
    headers: list[tuple[str, str]] | None = None,
    remote_addr: str = "127.0.0.1",
    host: str = "app.example.com",
) -> RequestFacts:
    path, _, query = target.partition("?")
    normalised = normalise_path(path)
    return RequestFacts(
        method="GET",
        methods=("GET",),
        scheme="https",
        host=host,
        path=normalised,
        query=query,
        target=target,
        headers=Headers(headers or []),
        remote_addr=remote_addr,
        request_id="req-1",
        environ={},
    )


def not_found() -> DecisionError:
    return DecisionError(404, "not_found", "The requested resource could not be found")


def unauthorized() -> DecisionError:
    return DecisionError(
        401,
        "unauthorized",
        "The request could not be authorized",
        headers=[("WWW-Authenticate", "Bearer")],
        reason="No valid session credentials found in the request.",
        details={"authenticators": ["cookie_session", "bearer_token"]},
    )


def handle(
    name: str, config: dict[str, Any], error: DecisionError, request: RequestFacts | None = None
) -> DecisionError | None:
    """The answer of one handler, or None when its `when` does not accept the error."""
    handler = ERROR_HANDLERS[name](make_services())
    prepared = handler.prepare(config, WHERE)
    request = request or facts()
    if not handler.matches(request, error, prepared):
        return None
    answer = handler.answer(request, error, prepared)
    assert isinstance(answer, DecisionError)
    return answer


def render(error: DecisionError, accept: str = "") -> TestResponse:
    return Client(error).get("/", headers={"Accept": accept} if accept else {})


def matches(when: list[Any], error: DecisionError, request: RequestFacts) -> bool:
    return handle("json", {"when": when}, error, request) is not None


# --- when: Oathkeeper's when_test.go cases ---------------------------------

JSON_ACCEPT = [("Accept", "application/json")]
JSON_BOTH = [("Accept", "application/json"), ("Content-Type", "application/json")]
MIXED = [("Accept", "application/json,text/html"), ("Content-Type", "application/json")]
CHROME = (
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/webp,image/apng,*/*;q=0.8,"
    "application/signed-exchange;v=b3;q=0.9"
)
FIREFOX = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def accept(*types: str) -> dict[str, Any]:
    return {"header": {"accept": list(types)}}


def content_type(*types: str) -> dict[str, Any]:
    return {"header": {"content_type": list(types)}}


def cidr(*nets: str, forwarded: bool = False) -> dict[str, Any]:
    return {"remote_ip": {"match": list(nets), "respect_forwarded_for_header": forwarded}}


def xff(*hops: str) -> list[tuple[str, str]]:
    return [("X-Forwarded-For", ", ".join(hops))]


@pytest.mark.parametrize(
    ("when", "request_", "expected"),
    [
        ([], facts(), True),
        ([{"error": ["forbidden"]}], facts(), False),
        ([{"error": ["forbidden", "not_found"]}], facts(), True),
        ([{"error": ["forbidden"]}, {"error": ["forbidden", "not_found"]}], facts(), True),
        ([{"error": ["not_found"], "request": {}}], facts(), True),
        ([{"error": ["not_found"], "request": content_type("application/json")}], facts(), False),
        ([{"error": ["not_found"], "request": accept("application/json")}], facts(), False),
        ([{"error": ["not_found"], "request": cidr("192.168.1.0/24")}], facts(), False),
        (
            [
                {"error": ["not_found"], "request": accept("application/xml")},
                {"error": ["unauthorized"], "request": accept("application/json")},
            ],
            facts(headers=JSON_ACCEPT),
            False,
        ),
        (
            [
                {"error": ["not_found"], "request": accept("application/xml")},
                {"error": ["not_found"], "request": accept("application/json")},
            ],
            facts(headers=JSON_ACCEPT),
            True,
        ),
        (
            [
                {"error": ["not_found"], "request": accept("application/xml")},
                {
                    "error": ["not_found"],
                    "request": {
                        "header": {
                            "accept": ["application/json"],
                            "content_type": ["application/xml"],
                        }
                    },
                },
            ],
            facts(headers=JSON_BOTH),
            False,
        ),
        (
            [
                {"error": ["not_found"], "request": content_type("application/xml")},
                {
                    "error": ["not_found"],
                    "request": {
                        "header": {
                            "accept": ["application/json"],
                            "content_type": ["application/json"],
                        }
                    },
                },
            ],
            facts(headers=JSON_BOTH),
            True,
        ),
        (
            [
                {"error": ["not_found"], "request": content_type("application/xml")},
                {"error": ["not_found"], "request": cidr("192.168.1.0/24")},
            ],
            facts(headers=JSON_BOTH),
            False,
        ),
        (
            [
                {"error": ["not_found"], "request": content_type("application/xml")},
                {"error": ["not_found"], "request": cidr("192.168.1.0/24")},
            ],
            facts(headers=JSON_BOTH, remote_addr="192.168.1.1"),
            True,
        ),
        (
            [{"error": ["not_found"], "request": cidr("192.168.1.0/24")}],
            facts(headers=JSON_BOTH + xff("127.0.0.2", "127.0.0.3", "192.168.1.2")),
            False,
        ),
        (
            [
                {
                    "error": ["not_found"],
                    "request": {**content_type("application/*"), **accept("text/html")},
                }
            ],
            facts(headers=MIXED),
            True,
        ),
        (
            [
                {
                    "error": ["not_found"],
                    "request": {**content_type("application/json"), **accept("text/*")},
                }
            ],
            facts(headers=MIXED),
            True,
        ),
        (
            [{"error": ["not_found"], "request": accept("application/json")}],
            facts(headers=[("Accept", CHROME)]),
            False,
        ),
        (
            [{"error": ["not_found"], "request": accept("application/json")}],
            facts(headers=[("Accept", FIREFOX)]),
            False,
        ),
        (
            [{"error": ["not_found"], "request": accept("text/html")}],
            facts(headers=[("Accept", FIREFOX)]),
            True,
        ),
    ],
)
def test_when_as_oathkeeper(when: list[Any], request_: RequestFacts, expected: bool) -> None:
    assert matches(when, not_found(), request_) is expected


@pytest.mark.parametrize(
    ("request_accept", "wanted", "expected"),
    [
        ("application/json", ["application/xml"], False),
        ("application/json", ["application/xml", "application/json"], True),
        ("application/*", ["application/json"], False),
        ("*/*", ["application/json"], False),
        ("application/*", ["application/*"], True),
        ("*/*", ["*/*"], True),
        (
            "text/html;q=0.9, application/xml;q=0.8, application/json;q=0.7",
            ["application/json"],
            True,
        ),
        ("Application/JSON; charset=utf-8", ["application/json"], True),
        ("application/json", ["*/*"], True),
        ("", ["application/octet-stream"], True),  # no Accept counts as octet-stream
        ("", ["application/json"], False),
        ("application/json;q=0, text/html", ["application/json"], False),  # refused by the client
    ],
)
def test_when_accept_mime_wildcards(request_accept: str, wanted: list[str], expected: bool) -> None:
    headers = [("Accept", request_accept)] if request_accept else []
    assert matches([{"request": accept(*wanted)}], not_found(), facts(headers=headers)) is expected


@pytest.mark.parametrize(
    ("value", "wanted", "expected"),
    [
        ("application/json; charset=utf-8", ["application/json"], True),
        ("application/json; charset=utf-8", ["application/*"], True),
        ("application/json; charset=utf-8", ["*/*"], True),
        ("text/plain", ["application/*"], False),
        ("", ["application/octet-stream"], True),
    ],
)
def test_when_content_type(value: str, wanted: list[str], expected: bool) -> None:
    headers = [("Content-Type", value)] if value else []
    request = facts(headers=headers)
    assert matches([{"request": content_type(*wanted)}], not_found(), request) is expected


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("unauthorized", DecisionError(401, "unauthorized", "x")),
        ("forbidden", DecisionError(403, "session_aal2_required", "x")),
        ("internal_server_error", DecisionError(500, "internal_server_error", "x")),
        ("too_many_requests", DecisionError(429, "rate_limited", "x")),
        ("service_unavailable", DecisionError(503, "ory_unavailable", "x")),
        ("bad_request", DecisionError(400, "bad_request", "x")),
        ("im_a_teapot", DecisionError(418, "teapot", "x")),
    ],
)
def test_when_error_kinds_are_snake_cased_status_texts(kind: str, error: DecisionError) -> None:
    assert matches([{"error": [kind]}], error, facts())
    assert not matches([{"error": ["not_found"]}], error, facts())


# --- when: remote_ip and X-Forwarded-For through trusted proxies only -------

NET = "192.168.1.0/24"


@pytest.mark.parametrize(
    ("remote_addr", "headers", "expected"),
    [
        ("192.168.1.7", [], True),
        ("::ffff:192.168.1.7", [], True),  # IPv4-mapped IPv6 counts as IPv4
        ("192.168.2.7", [], False),
        ("not-an-ip", [], False),
        ("", [], False),
        # Oathkeeper's case: the client is behind trusted proxies.
        ("10.0.0.1", xff("127.0.0.2", "127.0.0.3", "192.168.1.2"), True),
        ("10.0.0.1", xff("192.168.1.2", "10.0.0.9"), True),  # walks past trusted hops
        # A client writing X-Forwarded-For: only the address the trusted proxy saw counts.
        ("10.0.0.1", xff("192.168.1.2", "203.0.113.5"), False),
        ("10.0.0.1", xff("192.168.1.2") + xff("203.0.113.5"), False),
        ("10.0.0.1", xff("192.168.1.2, 203.0.113.5, 10.0.0.2"), False),
        # An untrusted peer's X-Forwarded-For is not read at all.
        ("203.0.113.5", xff("192.168.1.2"), False),
        ("127.0.0.1", xff("192.168.1.2"), False),
    ],
)
def test_when_forwarded_for_only_through_trusted_proxies(
    remote_addr: str, headers: list[tuple[str, str]], expected: bool
) -> None:
    request = facts(headers=headers, remote_addr=remote_addr)
    assert matches([{"request": cidr(NET, forwarded=True)}], not_found(), request) is expected


def test_when_forwarded_for_is_ignored_unless_asked() -> None:
    request = facts(headers=xff("192.168.1.2"), remote_addr="10.0.0.1")
    assert not matches([{"request": cidr(NET)}], not_found(), request)
    # The schema's `cidr` list reads as remote_ip.match.
    assert matches([{"request": {"cidr": ["10.0.0.0/8"]}}], not_found(), request)


@pytest.mark.parametrize(
    ("when", "message"),
    [
        (
            {"error": ["unauthorised"]},
            "unknown error kind 'unauthorised' (did you mean \"unauthorized\"?)",
        ),
        ({"error": "unauthorized"}, "must be a list of strings"),
        ({"request": cidr("192.168.1.0/33")}, "is not a CIDR"),
        ({"request": cidr("example.com")}, "is not a CIDR"),
        ({"request": accept("json")}, "is not a MIME type"),
        ({"request": accept("*/json")}, "is not a MIME type"),
        ({"request": {"headers": {}}}, "unknown config key 'headers'"),
        ({"reqest": {}}, "unknown config key 'reqest' (did you mean \"request\"?)"),
        (
            {"request": {"remote_ip": {"match": [], "respect_forwarded_for_header": "yes"}}},
            "true or false",
        ),
    ],
)
def test_when_bad_clauses_are_refused_at_load(when: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        ERROR_HANDLERS["json"](make_services()).prepare({"when": [when]}, WHERE)
    assert str(caught.value).startswith('rule "r1" errors[0] when[0]')
    assert message in str(caught.value)


# --- json -------------------------------------------------------------------


def test_json_answers_kratos_envelope_with_the_errors_headers() -> None:
    answer = handle("json", {}, unauthorized())
    assert answer is not None
    response = render(answer, accept="text/html")  # json whatever the client accepts
    assert response.status_code == 401
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json == {
        "error": {
            "code": 401,
            "status": "Unauthorized",
            "message": "The request could not be authorized",
        }
    }


def test_json_verbose_adds_id_reason_and_details() -> None:
    answer = handle("json", {"verbose": True}, unauthorized())
    assert answer is not None
    assert render(answer).json == {
        "error": {
            "id": "unauthorized",
            "code": 401,
            "status": "Unauthorized",
            "reason": "No valid session credentials found in the request.",
            "details": {"authenticators": ["cookie_session", "bearer_token"]},
            "message": "The request could not be authorized",
        }
    }


def test_json_passes_an_error_with_its_own_body() -> None:
    body = b'{"error":{"code":401,"status":"Unauthorized","reason":"r","message":"m"}}'
    error = DecisionError(401, "unauthorized", "m", body=body)
    assert handle("json", {}, error) is error
    assert render(error).data == body


def test_json_head_has_no_body() -> None:
    answer = handle("json", {}, not_found())
    assert answer is not None
    response = Client(answer).head("/")
    assert response.status_code == 404 and response.data == b""
    assert int(response.headers["Content-Length"]) > 0


# --- redirect ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "code", "location"),
    [
        ({"to": "http://test/test"}, 302, "http://test/test"),
        ({"to": "https://test/test"}, 302, "https://test/test"),
        ({"to": "/test"}, 302, "/test"),
        ({"to": "http://test/test", "code": 301}, 301, "http://test/test"),
        ({"to": "/test", "code": 303}, 303, "/test"),
        (
            {"to": "http://test/signin", "return_to_query_param": "return_to"},
            302,
            "http://test/signin?return_to=https%3A%2F%2Fapp.example.com%2Ftest%3Fa%3D1",
        ),
        (
            {"to": "/test/signin", "return_to_query_param": "return_to", "code": 301},
            301,
            "/test/signin?return_to=https%3A%2F%2Fapp.example.com%2Ftest%3Fa%3D1",
        ),
        (
            {
                "to": "https://login.example/in?flow=1&return_to=x#top",
                "return_to_query_param": "return_to",
            },
            302,
            "https://login.example/in?flow=1&return_to=https%3A%2F%2Fapp.example.com%2Ftest%3Fa%3D1#top",
        ),
    ],
)
def test_redirect(config: dict[str, Any], code: int, location: str) -> None:
    answer = handle("redirect", config, not_found(), facts("/test?a=1"))
    assert answer is not None
    response = render(answer)
    assert response.status_code == code
    assert response.headers["Location"] == location
    assert response.data == b""
    assert answer.error_id == "not_found" and answer.kind == "not_found"


@pytest.mark.parametrize(
    ("target", "host", "headers"),
    [
        ("/members/1?x=y", "evil.example", []),
        ("/members/1?x=y", "app.example.com", [("X-Forwarded-Host", "evil.example")]),
        ("/members/1?x=y", "app.example.com", [("Forwarded", "host=evil.example")]),
        ("/members/1?x=y", "app.example.com", [("X-Forwarded-Uri", "//evil.example/")]),
    ],
)
def test_redirect_return_to_is_built_from_the_public_url(
    target: str, host: str, headers: list[tuple[str, str]]
) -> None:
    config = {"to": "/login", "return_to_query_param": "return_to"}
    answer = handle("redirect", config, unauthorized(), facts(target, headers, host=host))
    assert answer is not None
    assert (
        answer.header("Location")
        == "/login?return_to=" + "https%3A%2F%2Fapp.example.com%2Fmembers%2F1%3Fx%3Dy"
    )


@pytest.mark.parametrize("target", ["//evil.example/x", "http://evil.example/x", "evil"])
def test_redirect_return_to_never_names_another_origin(target: str) -> None:
    config = {"to": "/login", "return_to_query_param": "r"}
    request = facts()
    request = RequestFacts(
        **{**{f: getattr(request, f) for f in request.__slots__}, "target": target}
    )
    answer = handle("redirect", config, unauthorized(), request)
    assert answer is not None
    assert answer.header("Location") == "/login?r=https%3A%2F%2Fapp.example.com%2F"


def test_redirect_when_only_for_browsers() -> None:
    config = {
        "to": "/login",
        "when": [{"error": ["unauthorized"], "request": {"header": {"accept": ["text/html"]}}}],
    }
    assert handle("redirect", config, unauthorized(), facts(headers=[("Accept", FIREFOX)]))
    assert handle("redirect", config, unauthorized(), facts(headers=JSON_ACCEPT)) is None
    assert handle("redirect", config, not_found(), facts(headers=[("Accept", FIREFOX)])) is None


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({}, "to is required"),
        ({"to": "javascript:alert(1)"}, "must be an http(s) URL or a path"),
        ({"to": "//evil.example/x"}, "must be an http(s) URL or a path"),
        ({"to": "evil.example/x"}, "must be an http(s) URL or a path"),
        ({"to": "ftp://files.example/"}, "must be an http(s) URL or a path"),
        ({"to": "https:///nohost"}, "must be an http(s) URL or a path"),
        ({"to": "/login\r\nSet-Cookie: a=b"}, "control or non-ASCII"),
        ({"to": "/a b"}, "control or non-ASCII"),
        ({"to": "/login", "code": 307}, "code must be 301, 302 or 303"),
        ({"to": "/login", "code": "302"}, "code must be 301, 302 or 303"),
        ({"to": "/login", "code": True}, "code must be 301, 302 or 303"),
        ({"to": "/login", "return_to_query_param": "a&b"}, "is not a plain name"),
        ({"to": "/login", "return_to": "r"}, "unknown config key 'return_to'"),
    ],
)
def test_redirect_bad_config_is_refused_at_load(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        ERROR_HANDLERS["redirect"](make_services()).prepare(config, WHERE)
    assert str(caught.value).startswith(WHERE) and message in str(caught.value)


# --- www_authenticate -------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "challenge"),
    [
        ({}, 'Basic realm="Please authenticate."'),
        ({"realm": "Staff only"}, 'Basic realm="Staff only"'),
        ({"realm": 'The "inner" \\ circle'}, 'Basic realm="The \\"inner\\" \\\\ circle"'),
    ],
)
def test_www_authenticate(config: dict[str, Any], challenge: str) -> None:
    answer = handle("www_authenticate", config, DecisionError(403, "forbidden", "no"))
    assert answer is not None
    response = render(answer)
    assert response.status_code == 401
    assert response.headers.getlist("WWW-Authenticate") == [challenge]
    assert json.loads(response.data)["error"]["code"] == 401


@pytest.mark.parametrize("realm", ["a\r\nb", "caf\u00e9", 5])
def test_www_authenticate_bad_realm(realm: Any) -> None:
    with pytest.raises(ConfigError, match=r"^rule \"r1\" errors\[0\]: realm"):
        ERROR_HANDLERS["www_authenticate"](make_services()).prepare({"realm": realm}, WHERE)
