"""Authorizers in-process: claims (session paths), ory_permissions (the Keto stand-in)."""

from __future__ import annotations

import logging
import socket
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pipeline_app import client, registry, services
from pytest_httpserver import HTTPServer
from test_keys import make_session
from test_ory_client import IDENTITY_ID, kratos_session
from test_pipeline_mutators import facts, make_services
from test_rules_loader import doc_blocks, load
from werkzeug.datastructures import Headers

from ory_wsgi.errors import ConfigError
from ory_wsgi.pipeline.authorizers import AUTHORIZERS
from ory_wsgi.pipeline.decision import Pipeline
from ory_wsgi.pipeline.errors import DecisionError
from ory_wsgi.pipeline.state import AuthSession, RequestFacts
from ory_wsgi.rules.matcher import Matcher
from ory_wsgi.rules.model import AccessRule, Handler, Match, RuleSet
from ory_wsgi.rules.template import MatchContext, RequestURL
from ory_wsgi.testing.keto import FakeKeto

WHERE = 'rule "r1" authorizer'


def session_with(
    groups: tuple[str, ...] = (), *, other: bool = False, **identity: Any
) -> AuthSession:
    ory = make_session()
    ory["identity"].update(identity)
    url = RequestURL("https", "app.example.com", "/api/things")
    match = MatchContext(groups, url, "GET", Headers())
    if other:
        # Another authenticator (a JWT, introspection) filled `extra`, not a Kratos session.
        return AuthSession(match=match, subject="client-1", extra=ory["identity"])
    return AuthSession(
        match=match,
        subject=ory["identity"]["id"],
        extra=ory,
        ory_session=ory,
        authenticator="cookie_session",
    )


def claims(require: dict[str, Any]) -> tuple[Any, Any]:
    handler = AUTHORIZERS["claims"](make_services(None))
    return handler, handler.prepare({"require": require}, WHERE)


def test_claims_allows_a_listed_value_and_refuses_others_with_403() -> None:
    handler, prepared = claims({"identity.metadata_public.role": ["admin", "editor"]})
    handler.authorize(facts(), session_with(metadata_public={"role": "editor"}), prepared)
    for role in ("viewer", "Admin", "", None, ["admin"], {"admin": True}):
        with pytest.raises(DecisionError) as refused:
            handler.authorize(facts(), session_with(metadata_public={"role": role}), prepared)
        assert refused.value.status == 403 and refused.value.error_id == "forbidden"
    with pytest.raises(DecisionError):
        handler.authorize(facts(), session_with(), prepared)  # no metadata_public at all


def test_claims_every_path_must_match() -> None:
    handler, prepared = claims(
        {"identity.metadata_public.role": ["admin"], "identity.state": ["active"]}
    )
    handler.authorize(facts(), session_with(metadata_public={"role": "admin"}), prepared)
    with pytest.raises(DecisionError):
        handler.authorize(
            facts(), session_with(metadata_public={"role": "admin"}, state="inactive"), prepared
        )


def test_claims_star_matches_when_any_element_does() -> None:
    handler, prepared = claims({"identity.verifiable_addresses[*].verified": [True]})
    addresses = [{"value": "a@x", "verified": False}, {"value": "b@x", "verified": True}]
    handler.authorize(facts(), session_with(verifiable_addresses=addresses), prepared)
    for refused_shape in (
        [{"verified": False}],
        [],
        [{"verified": 1}],  # JSON types count: 1 is not true
        [{"verified": "true"}],
        {"verified": True},  # not a list under [*]
        None,
    ):
        with pytest.raises(DecisionError):
            handler.authorize(facts(), session_with(verifiable_addresses=refused_shape), prepared)


def test_claims_read_extra_when_another_authenticator_filled_the_session() -> None:
    handler, prepared = claims({"metadata_public.role": ["admin"]})
    handler.authorize(
        facts(), session_with(other=True, metadata_public={"role": "admin"}), prepared
    )
    with pytest.raises(DecisionError):
        handler.authorize(facts(), session_with(other=True), prepared)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({}, "require must be a table"),
        ({"require": {}}, "require must be a table"),
        ({"require": {"identity.role": "admin"}}, "non-empty list"),
        ({"require": {"identity.role": []}}, "non-empty list"),
        ({"require": {"identity.role": [{"a": 1}]}}, "is not a string"),
        ({"require": {"identity..role": ["a"]}}, "is not a key"),
        ({"require": {"identity.role[0]": ["a"]}}, "is not a key"),
        ({"require": {"identity.__class__()": ["a"]}}, "is not a key"),
        ({"require": {"a": ["b"]}, "requires": {}}, "unknown config key"),
    ],
)
def test_claims_config_is_checked_at_load(config: dict[str, Any], message: str) -> None:
    handler = AUTHORIZERS["claims"](make_services(None))
    with pytest.raises(ConfigError, match=message) as failed:
        handler.prepare(config, WHERE)
    assert WHERE in str(failed.value)


def permissions(fake_keto: FakeKeto, **config: Any) -> tuple[Any, Any]:
    handler = AUTHORIZERS["ory_permissions"](make_services(None))
    settings = {
        "url": fake_keto.url,
        "namespace": "documents",
        "object": "{{ index .MatchContext.RegexpCaptureGroups 0 }}",
        "relation": "view",
        "subject_id": "{{ .Subject }}",
        **config,
    }
    return handler, handler.prepare(settings, WHERE)


def refusal(
    handler: Any, session: AuthSession, prepared: Any, request: RequestFacts | None = None
) -> DecisionError:
    with pytest.raises(DecisionError) as refused:
        handler.authorize(request or facts(), session, prepared)
    return refused.value


def test_permissions_allow_a_granted_tuple_rendered_from_captures_and_session(
    fake_keto: FakeKeto,
) -> None:
    ada = session_with(("doc-1",))
    fake_keto.add("documents", "doc-1", "view", subject_id=ada.subject)
    handler, prepared = permissions(fake_keto)
    handler.authorize(facts(), ada, prepared)
    # Another object, another subject: not granted, 403.
    for other in (session_with(("doc-2",)), AuthSession(ada.match, subject="someone-else")):
        error = refusal(handler, other, prepared)
        assert (error.status, error.error_id) == (403, "forbidden")


def test_permissions_subject_set_and_session_fields(fake_keto: FakeKeto) -> None:
    fake_keto.add("documents", "doc-1", "edit", subject_set=("teams", "ops", "member"))
    handler, prepared = permissions(
        fake_keto,
        relation="edit",
        subject_id=None,
        subject_set={
            "namespace": "teams",
            "object": "{{ .Extra.identity.traits.team }}",
            "relation": "member",
        },
    )
    handler.authorize(facts(), session_with(("doc-1",), traits={"team": "ops"}), prepared)
    assert (
        refusal(handler, session_with(("doc-1",), traits={"team": "dev"}), prepared).status == 403
    )
    # No team at all renders an empty object: refused without asking Keto.
    calls = fake_keto.check_calls
    assert refusal(handler, session_with(("doc-1",), traits={}), prepared).status == 403
    assert fake_keto.check_calls == calls


def test_permissions_cache_answers_per_tuple_denials_too(fake_keto: FakeKeto) -> None:
    ada = session_with(("doc-1",))
    fake_keto.add("documents", "doc-1", "view", subject_id=ada.subject)
    handler, prepared = permissions(fake_keto, cache={"ttl": "0.3s"})
    for _ in range(5):
        handler.authorize(facts(), ada, prepared)
        refusal(handler, session_with(("doc-2",)), prepared)
    assert fake_keto.check_calls == 2  # one per tuple
    # A revoked permission is seen once the TTL has passed.
    fake_keto.remove("documents", "doc-1", "view", ada.subject)
    handler.authorize(facts(), ada, prepared)
    time.sleep(0.35)
    assert refusal(handler, ada, prepared).status == 403
    assert fake_keto.check_calls == 3


def test_permissions_cache_off_asks_every_time(fake_keto: FakeKeto) -> None:
    handler, prepared = permissions(fake_keto, cache={"ttl": "0s"})
    for _ in range(3):
        refusal(handler, session_with(("doc-1",)), prepared)
    assert fake_keto.check_calls == 3


def test_permissions_single_flight_under_threads(fake_keto: FakeKeto) -> None:
    ada = session_with(("doc-1",))
    fake_keto.add("documents", "doc-1", "view", subject_id=ada.subject)
    fake_keto.delay = 0.5
    handler, prepared = permissions(fake_keto)
    allowed: list[bool] = []

    def check() -> None:
        handler.authorize(facts(), ada, prepared)
        allowed.append(True)

    threads = [threading.Thread(target=check) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert allowed == [True] * 8
    assert fake_keto.check_calls == 1


def test_permissions_keto_down_is_503_with_retry_after_and_one_log_line(
    fake_keto: FakeKeto, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    handler = AUTHORIZERS["ory_permissions"](make_services(None))
    prepared = handler.prepare(
        {
            "url": f"http://127.0.0.1:{port}",
            "namespace": "documents",
            "object": "doc-1",
            "relation": "view",
            "subject_id": "{{ .Subject }}",
        },
        WHERE,
    )
    with caplog.at_level(logging.ERROR, logger="ory_wsgi.pipeline"):
        error = refusal(handler, session_with(), prepared)
    assert error.status == 503 and error.header("Retry-After") == "5"
    assert len(caplog.records) == 1 and "unreachable" in caplog.records[0].getMessage()
    # Keto answering 5xx, a timeout or garbage is closed the same way, and never cached.
    fake_keto.fail_checks(500)
    handler, prepared = permissions(fake_keto, object="doc-1")
    assert refusal(handler, session_with(), prepared).status == 503
    fake_keto.reset()
    fake_keto.delay = 1.0
    handler, prepared = permissions(fake_keto, object="doc-1", timeout="0.2s")
    assert refusal(handler, session_with(), prepared).status == 503
    fake_keto.reset()
    fake_keto.add("documents", "doc-1", "view", subject_id=session_with().subject)
    handler.authorize(facts(), session_with(), prepared)


def test_permissions_429_is_passed_on_with_retry_after(fake_keto: FakeKeto) -> None:
    fake_keto.fail_checks(429, retry_after="9")
    handler, prepared = permissions(fake_keto, object="doc-1")
    error = refusal(handler, session_with(), prepared)
    assert error.status == 429 and error.header("Retry-After") == "9"
    assert refusal(handler, session_with(), prepared).status == 429
    assert fake_keto.check_calls == 2  # not cached


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"url": "ftp://keto"}, "url must be"),
        ({"url": ""}, "url must be"),
        ({"namespace": ""}, "namespace is required"),
        ({"subject_id": None}, "exactly one of subject_id or subject_set"),
        ({"subject_set": {"namespace": "a", "object": "b", "relation": "c"}}, "exactly one"),
        ({"object": "{{ .Nope }}"}, "object"),
        ({"cache": {"ttl": "soon"}}, "cache.ttl"),
        ({"cache": {"size": 3}}, "unknown config key"),
        ({"timeout": "0s"}, "timeout must be"),
        ({"subjectid": "x"}, "unknown config key"),
    ],
)
def test_permissions_config_is_checked_at_load(
    fake_keto: FakeKeto, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as failed:
        permissions(fake_keto, **changes)
    assert WHERE in str(failed.value)


def doc_rule(handler: str, mutator: str = "") -> dict[str, Any]:
    """The [[rule]] example of docs/rules-handlers.md whose authorizer is `handler`
    (and that has the mutator `mutator`, when given)."""
    documents = [tomllib.loads(b) for b in doc_blocks("toml", "rules-handlers.md")]
    rules = [rule for document in documents for rule in document.get("rule", [])]
    return next(
        r
        for r in rules
        if r.get("authorizer", {}).get("handler") == handler
        and (not mutator or any(m["handler"] == mutator for m in r.get("mutators", [])))
    )


def test_the_claims_example_in_the_docs() -> None:
    rule = doc_rule("claims")
    handler = AUTHORIZERS["claims"](make_services(None))
    prepared = handler.prepare(rule["authorizer"]["config"], WHERE)
    addresses = [{"verified": False}, {"verified": True}]
    handler.authorize(
        facts(),
        session_with(metadata_public={"role": "admin"}, verifiable_addresses=addresses),
        prepared,
    )
    unverified = session_with(
        metadata_public={"role": "admin"}, verifiable_addresses=[{"verified": False}]
    )
    assert refusal(handler, unverified, prepared).status == 403


def test_the_ory_permissions_example_in_the_docs(fake_keto: FakeKeto) -> None:
    rule = doc_rule("ory_permissions")
    config = {**rule["authorizer"]["config"], "url": fake_keto.url}
    handler = AUTHORIZERS["ory_permissions"](make_services(None))
    prepared = handler.prepare(config, WHERE)
    ada = session_with(("doc-1",))
    fake_keto.add("documents", "doc-1", "view", subject_id=ada.subject)
    handler.authorize(facts(), ada, prepared)
    assert refusal(handler, session_with(("doc-2",)), prepared).status == 403


def test_the_rule_examples_in_the_docs_load_as_rules(tmp_path: Path) -> None:
    text = (Path(__file__).parent.parent / "docs" / "rules-handlers.md").read_text()
    blocks = [b.split("```")[0] for b in text.split("```toml\n")[1:]]
    rule_set = load(tmp_path, "[access_rules]\n" + "\n".join(blocks))
    assert [r.id for r in rule_set.rules] == [
        "profile",
        "admin-area",
        "documents",
        "reports",
        "payments",
    ]
    assert rule_set.invalid == ()


def remote_json(url: str, **config: Any) -> tuple[Any, Any]:
    handler = AUTHORIZERS["remote_json"](make_services(None))
    settings = {
        "remote": url,
        "payload": '{"subject": "{{ .Subject }}", "object": "{{ index '
        '.MatchContext.RegexpCaptureGroups 0 }}"}',
        "headers": {"x-api-key": "k-1"},
        "forward_response_headers_to_upstream": ["X-Tenant"],
        **config,
    }
    return handler, handler.prepare(settings, WHERE)


def test_remote_json_posts_the_rendered_payload_and_its_status_decides(
    httpserver: HTTPServer,
) -> None:
    ada = session_with(('doc-"1',))
    sent = {"subject": ada.subject, "object": 'doc-"1'}
    httpserver.expect_request(
        "/check", method="POST", json=sent, headers={"X-Api-Key": "k-1"}
    ).respond_with_data("", 200, headers={"X-Tenant": "acme", "X-Other": "no"})
    handler, prepared = remote_json(httpserver.url_for("/check"))
    handler.authorize(facts(), ada, prepared)
    # The quote in the capture group stayed inside its string; the header was forwarded.
    assert ada.header == {"X-Tenant": "acme"}
    httpserver.clear()
    for status, expected in ((403, 403), (429, 429), (500, 503), (404, 503), (302, 503)):
        httpserver.expect_request("/check").respond_with_data(
            "", status, headers={"Retry-After": "7"}
        )
        error = refusal(handler, ada, prepared)
        assert error.status == expected, status
        if expected == 429:
            assert error.header("Retry-After") == "7"
        if expected == 503:
            assert error.header("Retry-After") == "5"
        httpserver.clear()


def test_remote_json_header_templates_cannot_split_the_request(httpserver: HTTPServer) -> None:
    handler, prepared = remote_json(
        httpserver.url_for("/check"), headers={"X-Who": "{{ .Extra.identity.traits.name }}"}
    )
    for name in ("a\r\nX-Admin: 1", "a\nb", "a\x00b"):
        error = refusal(handler, session_with(("d",), traits={"name": name}), prepared)
        assert error.status == 500, repr(name)
    assert len(httpserver.log) == 0


def test_remote_json_unreachable_is_503_after_retrying_until_give_up_after() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    handler, prepared = remote_json(
        f"http://127.0.0.1:{port}/check", retry={"give_up_after": "0.3s"}
    )
    started = time.monotonic()
    error = refusal(handler, session_with(("d",)), prepared)
    assert error.status == 503
    assert 0.25 <= time.monotonic() - started < 2


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"remote": "file:///etc/passwd"}, "remote must be"),
        ({"payload": ""}, "payload must be"),
        ({"headers": {"Bad Name": "x"}}, "not a header name"),
        ({"retry": {"max_delay": "0s"}}, "max_delay must be"),
        ({"retry": {"tries": 3}}, "unknown config key"),
        ({"forward_response_headers_to_upstream": "X-A"}, "must be a list"),
    ],
)
def test_remote_json_config_is_checked_at_load(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        remote_json("http://127.0.0.1:1/check", **changes)


def test_the_remote_json_example_in_the_docs(httpserver: HTTPServer) -> None:
    config = {**doc_rule("remote_json")["authorizer"]["config"]}
    config["remote"] = httpserver.url_for("/check")
    handler = AUTHORIZERS["remote_json"](make_services(None))
    prepared = handler.prepare(config, WHERE)
    ada = session_with(("q3",))
    httpserver.expect_request(
        "/check", json={"subject": ada.subject, "report": "q3"}, headers={"X-Api-Key": "change-me"}
    ).respond_with_data("", 200, headers={"X-Tenant": "acme"})
    handler.authorize(facts(), ada, prepared)
    assert ada.header == {"X-Tenant": "acme"}


def test_a_rule_with_ory_permissions_through_the_pipeline(
    ory: HTTPServer, fake_keto: FakeKeto
) -> None:
    ory.expect_request("/sessions/whoami").respond_with_json(kratos_session())
    rule = AccessRule(
        id="docs",
        source="test",
        match=Match(("GET",), "http://localhost/docs/<[^/]+>"),
        authenticators=(Handler("cookie_session"),),
        authorizer=Handler(
            "ory_permissions",
            {
                "url": fake_keto.url,
                "namespace": "documents",
                "object": "{{ index .MatchContext.RegexpCaptureGroups 0 }}",
                "relation": "view",
                "subject_id": "{{ .Subject }}",
            },
        ),
        mutators=(Handler("noop"),),
    )
    svc = services(ory.url_for("/"))
    matcher = Matcher(RuleSet((rule,), default_rule=""))
    web = client(Pipeline(registry(svc), lambda: matcher, trusted=True))
    fake_keto.add("documents", "doc-1", "view", subject_id=IDENTITY_ID)
    cookie = {"Cookie": "ory_kratos_session=secret-session"}
    assert web.get("/docs/doc-1", headers=cookie).status_code == 200
    assert web.get("/docs/doc-2", headers=cookie).status_code == 403
    assert web.get("/docs/doc-1", headers=cookie).status_code == 200
    assert fake_keto.check_calls == 2
    fake_keto.fail_checks(503)
    down = web.get("/docs/doc-3", headers=cookie)
    assert down.status_code == 503 and down.headers["Retry-After"] == "5"


def test_permissions_send_the_api_key_to_keto_and_never_log_it(
    fake_keto: FakeKeto, caplog: pytest.LogCaptureFixture
) -> None:
    key = "ory_pat_s3cr3tK3y"
    handler = AUTHORIZERS["ory_permissions"](make_services(None))
    config = {
        "url": fake_keto.url,
        "namespace": "documents",
        "object": "{{ index .MatchContext.RegexpCaptureGroups 0 }}",
        "relation": "view",
        "subject_id": "{{ .Subject }}",
        "cache": {"ttl": "0s"},
    }
    keyed = handler.prepare({**config, "api_key": key}, WHERE)
    unkeyed = handler.prepare(config, WHERE)
    ada = session_with(("doc-1",))
    fake_keto.add("documents", "doc-1", "view", subject_id=ada.subject)
    fake_keto.require_api_key(key)
    with caplog.at_level(logging.DEBUG):
        handler.authorize(facts(), ada, keyed)
        # Without the key the stand-in answers 401, as Ory Network does: closed.
        assert refusal(handler, ada, unkeyed).status == 503
        for bad in ("ory_pat_x\r\nX-Admin: 1", "two words", 42):
            with pytest.raises(ConfigError) as refused:
                handler.prepare({**config, "api_key": bad}, WHERE)
            assert str(bad) not in str(refused.value)
    assert fake_keto.check_calls == 2
    assert key not in caplog.text
    assert key not in repr(keyed)
