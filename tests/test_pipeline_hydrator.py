"""The `hydrator` mutator in-process, against pytest-httpserver as the API."""

from __future__ import annotations

import base64
import copy
import json
import logging
import threading
import time
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from test_pipeline_authorizers import doc_rule
from test_pipeline_mutators import anonymous_session, facts, kratos_session, make_services
from werkzeug.wrappers import Request, Response

from ory_wsgi.errors import ConfigError
from ory_wsgi.pipeline.errors import DecisionError
from ory_wsgi.pipeline.mutators import MUTATORS
from ory_wsgi.pipeline.state import AuthSession

WHERE = 'rule "r1" mutators[0]'


def hydrator(url: str, where: str = WHERE, **config: Any) -> tuple[Any, Any]:
    handler = MUTATORS["hydrator"](make_services(None))
    return handler, handler.prepare({"api": {"url": url}, **config}, where)


def enrich(request: Request) -> Response:
    """An API that answers the session back with a plan, as Oathkeeper's examples do."""
    session = json.loads(request.get_data())
    session["extra"] = {"plan": "gold", "calls": 1}
    session["header"] = {"X-Plan": ["gold"], "x-tenant": "acme"}
    return Response(json.dumps(session), 200, mimetype="application/json")


def test_the_session_goes_out_and_the_answer_is_merged_for_later_mutators(
    httpserver: HTTPServer,
) -> None:
    httpserver.expect_request("/hydrate", method="POST").respond_with_handler(enrich)
    password = "s3cret-pw"
    handler, prepared = hydrator(
        httpserver.url_for("/hydrate"),
        api={
            "url": httpserver.url_for("/hydrate"),
            "auth": {"basic": {"username": "ok", "password": password}},
        },
    )
    ada = kratos_session()
    ada.header["X-Before"] = "1"
    kratos = copy.deepcopy(ada.ory_session)
    handler.mutate(facts(), ada, prepared)
    request, _ = httpserver.log[0]
    sent = json.loads(request.get_data())
    assert sent["subject"] == ada.subject
    assert sent["extra"]["identity"]["id"] == ada.subject
    assert sent["header"] == {"X-Before": ["1"]}
    assert sent["match_context"] == {
        "regexp_capture_groups": ["things"],
        "url": "https://app.example.com/api/things",
        "method": "GET",
    }
    expected = "Basic " + base64.b64encode(f"ok:{password}".encode()).decode()
    assert request.headers["Authorization"] == expected
    assert ada.extra["plan"] == "gold" and ada.extra["identity"]["id"] == ada.subject
    assert ada.header == {"X-Before": "1", "X-Plan": "gold", "X-Tenant": "acme"}
    # The Kratos session (shared with the session cache) is not changed.
    assert ada.ory_session == kratos
    header = MUTATORS["header"](make_services(None))
    later = header.prepare({"headers": {"X-Seen-Plan": "{{ print .Extra.plan }}"}}, WHERE)
    header.mutate(facts(), ada, later)
    assert ada.header["X-Seen-Plan"] == "gold"
    assert password not in repr(prepared)


def test_the_cache_keys_on_subject_session_and_rule_not_the_request(
    httpserver: HTTPServer,
) -> None:
    httpserver.expect_request("/hydrate").respond_with_handler(enrich)
    url = httpserver.url_for("/hydrate")
    cache = {"cache": {"enabled": True, "ttl": "300ms"}}
    handler, prepared = hydrator(url, **cache)
    ada = kratos_session()
    for path in ("/a", "/b?x=1", "/c"):
        session = kratos_session()
        handler.mutate(facts(path), session, prepared)
        assert session.extra["plan"] == "gold" and session.header["X-Plan"] == "gold"
    assert len(httpserver.log) == 1
    handler.mutate(facts(), kratos_session(id="another-session"), prepared)
    assert len(httpserver.log) == 2
    # Another rule: its own entry (the same handler instance serves every rule).
    other = handler.prepare({"api": {"url": url}, **cache}, 'rule "r2" mutators[0]')
    handler.mutate(facts(), kratos_session(), other)
    assert len(httpserver.log) == 3
    # Not a Kratos session: keyed on what the authenticator found.
    for _ in range(2):
        handler.mutate(facts(), anonymous_session(), prepared)
    assert len(httpserver.log) == 4
    time.sleep(0.35)
    handler.mutate(facts(), ada, prepared)
    assert len(httpserver.log) == 5
    off, unprepared = hydrator(url)
    for _ in range(2):
        off.mutate(facts(), kratos_session(), unprepared)
    assert len(httpserver.log) == 7


def refusal(handler: Any, prepared: Any, session: AuthSession | None = None) -> DecisionError:
    with pytest.raises(DecisionError) as refused:
        handler.mutate(facts(), session or kratos_session(), prepared)
    return refused.value


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (401, "{}"),
        (500, "{}"),
        (302, "{}"),
        (200, "not json"),
        (200, "[]"),
        (200, '{"subject": "someone-else"}'),
        (200, '{"extra": ["x"]}'),
        (200, '{"header": {"Content-Length": "0"}}'),
        (200, '{"header": {"X Bad": "1"}}'),
        (200, '{"header": {"X-A": 1}}'),
        (200, json.dumps({"extra": {"pad": "x" * 70000}})),
    ],
)
def test_an_unusable_answer_is_503_closed_and_not_cached(
    httpserver: HTTPServer, status: int, body: str, caplog: pytest.LogCaptureFixture
) -> None:
    handler, prepared = hydrator(httpserver.url_for("/hydrate"), cache={"enabled": True})
    httpserver.expect_request("/hydrate").respond_with_data(body, status)
    with caplog.at_level(logging.ERROR, "ory_wsgi.pipeline"):
        error = refusal(handler, prepared)
    assert error.status == 503 and error.header("Retry-After") == "5"
    assert len(caplog.records) == 1
    httpserver.clear()
    httpserver.expect_request("/hydrate").respond_with_handler(enrich)
    handler.mutate(facts(), kratos_session(), prepared)


def test_a_header_value_with_a_line_break_is_refused(httpserver: HTTPServer) -> None:
    handler, prepared = hydrator(httpserver.url_for("/hydrate"))
    httpserver.expect_request("/hydrate").respond_with_json({"header": {"X-A": ["a\r\nX-B: 1"]}})
    assert refusal(handler, prepared).status == 500


def test_429_is_passed_on_and_an_unreachable_api_is_503() -> None:
    server = HTTPServer()
    server.start()
    try:
        server.expect_request("/h").respond_with_data("", 429, headers={"Retry-After": "11"})
        handler, prepared = hydrator(server.url_for("/h"))
        error = refusal(handler, prepared)
        assert (error.status, error.header("Retry-After")) == (429, "11")
        url = server.url_for("/h")
    finally:
        server.stop()
    handler, prepared = hydrator(url, api={"url": url, "retry": {"give_up_after": "200ms"}})
    error = refusal(handler, prepared)
    assert (error.status, error.error_id) == (503, "hydrator_unavailable")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({}, "api must be"),
        ({"api": {"url": "file:///x"}}, "api.url must be"),
        ({"api": {"url": "http://h/", "timeout": 1}}, "unknown config key"),
        ({"api": {"url": "http://h/", "auth": {"basic": {"username": "u"}}}}, "needs a username"),
        ({"api": {"url": "http://h/", "auth": {"bearer": "x"}}}, "unknown config key"),
        ({"api": {"url": "http://h/"}, "cache": {"enabled": "yes"}}, "true or false"),
        ({"api": {"url": "http://h/"}, "cache": {"ttl": "soon", "enabled": True}}, "ttl"),
    ],
)
def test_config_is_checked_at_load(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        MUTATORS["hydrator"](make_services(None)).prepare(config, WHERE)


def test_the_hydrator_example_in_the_docs(httpserver: HTTPServer) -> None:
    rule = doc_rule("allow", mutator="hydrator")
    (step,) = [m for m in rule["mutators"] if m["handler"] == "hydrator"]
    config = copy.deepcopy(step["config"])
    config["api"]["url"] = httpserver.url_for("/hydrate")
    httpserver.expect_request("/hydrate").respond_with_handler(enrich)
    handler = MUTATORS["hydrator"](make_services(None))
    prepared = handler.prepare(config, WHERE)
    for _ in range(2):
        session = kratos_session()
        handler.mutate(facts(), session, prepared)
        assert session.extra["plan"] == "gold"
    assert len(httpserver.log) == 1  # the example turns the cache on


def test_concurrent_first_requests_of_one_session_cost_one_call(httpserver: HTTPServer) -> None:
    def slow(request: Request) -> Response:
        time.sleep(0.3)
        return enrich(request)

    httpserver.expect_request("/hydrate").respond_with_handler(slow)
    url = httpserver.url_for("/hydrate")
    handler, prepared = hydrator(
        url, api={"url": url, "retry": {"max_delay": "2s"}}, cache={"enabled": True}
    )
    sessions = [kratos_session() for _ in range(8)]
    threads = [
        threading.Thread(target=handler.mutate, args=(facts(), s, prepared)) for s in sessions
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert [s.extra.get("plan") for s in sessions] == ["gold"] * 8
    assert len(httpserver.log) == 1
