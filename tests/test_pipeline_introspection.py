"""oauth2_introspection in-process (werkzeug.test.Client around the Pipeline), Hydra over HTTP.

The Hydra stand-in (`fake_hydra`) answers every introspection; the tests count
its calls per token to check the cache and single-flight, and make it fail or
lie to check that every doubt is a refusal.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import pytest
from pipeline_app import client, registry, services
from test_pipeline_authorizers import session_with
from test_pipeline_mutators import facts
from test_rules_loader import doc_blocks
from werkzeug.datastructures import Headers
from werkzeug.test import Client

from ory_wsgi.errors import ConfigError
from ory_wsgi.pipeline.authenticators import AUTHENTICATORS
from ory_wsgi.pipeline.decision import Pipeline
from ory_wsgi.rules.loader import decode_document, parse_document
from ory_wsgi.rules.matcher import Matcher
from ory_wsgi.rules.model import AccessRule, Handler, Match, RuleSet
from ory_wsgi.testing.hydra import FakeHydra, serve_hydra

WHERE = 'rule "api" authenticator'
DOC = "rules-handlers.md"
HEADERS = {"X-Subject": "{{ print .Subject }}", "X-Client": "{{ print .Extra.client_id }}"}


def api_rule(*authenticators: Handler, mutators: tuple[Handler, ...] = ()) -> AccessRule:
    return AccessRule(
        id="api",
        source="test",
        match=Match(("GET", "POST"), "<https?>://<[^/]+>/<.*>"),
        authenticators=authenticators,
        authorizer=Handler("allow"),
        mutators=mutators or (Handler("header", {"headers": HEADERS}),),
    )


def gateway(
    hydra: FakeHydra, *others: Handler, mutators: tuple[Handler, ...] = (), **config: Any
) -> Client:
    """The pipeline with one rule: oauth2_introspection (then `others`) against `hydra`."""
    settings = {"introspection_url": hydra.introspection_url, **config}
    rule = api_rule(Handler("oauth2_introspection", settings), *others, mutators=mutators)
    return serving(hydra, rule)


def serving(hydra: FakeHydra, *rules: AccessRule) -> Client:
    matcher = Matcher(RuleSet(rules))
    return client(Pipeline(registry(services(hydra.url)), lambda: matcher, trusted=True))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_an_active_token_names_its_subject_and_extra(fake_hydra: FakeHydra) -> None:
    token = fake_hydra.issue("ada", scope=["photos.read"], client_id="photo-app")
    answer = gateway(fake_hydra).get("/x", headers=bearer(token))
    assert answer.status_code == 200
    assert answer.json == {
        "rule": "api",
        "subject": "ada",
        "authenticator": "oauth2_introspection",
        "headers": {"X-Subject": "ada", "X-Client": "photo-app"},
        "state": "allow",
    }


def test_extra_is_ext_plus_oathkeepers_fields(fake_hydra: FakeHydra) -> None:
    token = fake_hydra.issue("ada", scope=["a", "b"], audience=["api"], ext={"tier": "gold"})
    headers = {"X-Extra": "{{ .Extra | toJson }}"}
    app = gateway(fake_hydra, mutators=(Handler("header", {"headers": headers}),))
    answer = app.get("/x", headers=bearer(token))
    assert answer.json is not None
    assert json.loads(answer.json["headers"]["X-Extra"]) == {
        "tier": "gold",
        "username": "",
        "client_id": "ory-wsgi-test",
        "scope": "a b",
        "aud": ["api"],
    }


def test_inactive_unknown_revoked_and_expired_tokens_are_401(fake_hydra: FakeHydra) -> None:
    app = gateway(fake_hydra, cache={"ttl": "0s"})
    revoked = fake_hydra.issue("ada")
    fake_hydra.revoke(revoked)
    short = fake_hydra.issue("ada", ttl=1)
    assert app.get("/x", headers=bearer(short)).status_code == 200
    time.sleep(1.1)
    for token in ("ory_at_unknown.token", revoked, short):
        answer = app.get("/x", headers=bearer(token))
        assert answer.status_code == 401, token
        assert answer.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


@pytest.mark.parametrize(
    ("headers", "config", "responsible"),
    [
        ({}, {}, False),
        ({"Authorization": "Basic dTpw"}, {}, False),
        ({"Authorization": "Bearer "}, {}, False),
        # The token must be where token_from says, nowhere else.
        ({"Authorization": "Bearer {t}"}, {"token_from": {"header": "X-Api-Token"}}, False),
        ({"X-Api-Token": "{t}"}, {"token_from": {"header": "X-Api-Token"}}, True),
        ({"Cookie": "at={t}"}, {"token_from": {"query_parameter": "at"}}, False),
        ({"Cookie": "at={t}"}, {"token_from": {"cookie": "at"}}, True),
        # prefix: only tokens that start with it are this authenticator's.
        ({"Authorization": "Bearer {t}"}, {"prefix": "ory_at_"}, True),
        ({"Authorization": "Bearer {t}"}, {"prefix": "ory_at_x"}, False),
        ({"Authorization": "Bearer x{t}"}, {"prefix": "ory_at_"}, False),
        ({"Authorization": "Bearer ORY_AT_{t}"}, {"prefix": "ory_at_"}, False),
    ],
)
def test_who_is_responsible_for_which_token(
    fake_hydra: FakeHydra, headers: dict[str, str], config: dict[str, Any], responsible: bool
) -> None:
    token = fake_hydra.issue("ada")
    sent = {name: value.replace("{t}", token) for name, value in headers.items()}
    app = gateway(fake_hydra, Handler("anonymous", {"subject": "guest"}), **config)
    answer = app.get("/x", headers=sent)
    if responsible:
        assert answer.json is not None and answer.json["subject"] == "ada"
        assert fake_hydra.calls(token) == 1
        return
    assert fake_hydra.introspection_calls == 0
    if "Authorization" in sent:
        # anonymous stands aside when Authorization is present (Oathkeeper): nobody is left.
        assert answer.status_code == 401
    else:
        assert answer.json is not None and answer.json["subject"] == "guest"


def test_query_parameter_token(fake_hydra: FakeHydra) -> None:
    token = fake_hydra.issue("ada")
    app = gateway(fake_hydra, token_from={"query_parameter": "access_token"})
    assert app.get(f"/x?access_token={token}").status_code == 200
    assert app.get("/x", headers=bearer(token)).status_code == 401


@pytest.mark.parametrize(
    ("strategy", "granted", "required", "status"),
    [
        ("exact", ["photos.read"], ["photos.read"], 200),
        ("exact", ["photos"], ["photos.read"], 403),
        ("hierarchic", ["photos"], ["photos.read"], 200),
        ("hierarchic", ["photos.read"], ["photos"], 403),
        ("wildcard", ["photos.*"], ["photos.read", "photos.write"], 200),
        ("wildcard", ["photos.*"], ["videos.read"], 403),
        # No strategy: Hydra is asked with `scope` and answers inactive when one is missing.
        (None, ["photos.*"], ["photos.read"], 200),
        (None, ["photos.read"], ["videos.read"], 401),
        ("none", ["photos.read"], ["videos.read"], 401),
    ],
)
def test_required_scope_under_each_strategy(
    fake_hydra: FakeHydra,
    strategy: str | None,
    granted: list[str],
    required: list[str],
    status: int,
) -> None:
    token = fake_hydra.issue("ada", scope=granted)
    config: dict[str, Any] = {"required_scope": required}
    if strategy is not None:
        config["scope_strategy"] = strategy
    assert gateway(fake_hydra, **config).get("/x", headers=bearer(token)).status_code == status


def test_audience_as_list_or_string_and_trusted_issuers(fake_hydra: FakeHydra) -> None:
    listed = fake_hydra.issue("ada", audience=["api", "other"])
    app = gateway(fake_hydra, target_audience=["api"], trusted_issuers=[fake_hydra.issuer])
    assert app.get("/x", headers=bearer(listed)).status_code == 200
    as_string = fake_hydra.issue("ada")
    answer = fake_hydra.introspect(as_string)
    fake_hydra.answer_with(as_string, {**answer, "aud": "api"})
    assert app.get("/x", headers=bearer(as_string)).status_code == 200
    # "api" is not a member of "apiary": a string audience is one value, not a substring.
    near = fake_hydra.issue("ada")
    fake_hydra.answer_with(near, {**fake_hydra.introspect(near), "aud": "apiary"})
    assert app.get("/x", headers=bearer(near)).status_code == 403
    assert app.get("/x", headers=bearer(fake_hydra.issue("ada"))).status_code == 403
    stranger = fake_hydra.issue("ada", audience=["api"])
    fake_hydra.answer_with(
        stranger, {**fake_hydra.introspect(stranger), "iss": "https://evil.example/"}
    )
    assert app.get("/x", headers=bearer(stranger)).status_code == 403


def test_a_token_that_is_not_an_access_token_is_403(fake_hydra: FakeHydra) -> None:
    refresh = fake_hydra.issue("ada", token_use="refresh_token")
    assert gateway(fake_hydra).get("/x", headers=bearer(refresh)).status_code == 403


@pytest.mark.parametrize(
    "answer",
    [
        {"active": "true", "sub": "root"},
        {"active": 1, "sub": "root"},
        {"sub": "root"},
        {"active": True, "sub": ["root"]},
        {"active": True, "sub": "root", "exp": "never"},
        {"active": True, "sub": "root", "aud": [1]},
        {"active": True, "sub": "root", "ext": "admin"},
        ["active", True],
        "active",
        {"active": True, "sub": "root", "ext": {"pad": "a" * 70000}},
    ],
)
def test_an_answer_that_is_not_rfc_7662_is_refused_closed(
    fake_hydra: FakeHydra, answer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    token = fake_hydra.issue("ada")
    fake_hydra.answer_with(token, answer)
    app = gateway(fake_hydra)
    with caplog.at_level(logging.ERROR, "ory_wsgi.pipeline"):
        refused = app.get("/x", headers=bearer(token))
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "5"
    assert b"Traceback" not in refused.get_data()
    (line,) = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.ERROR and r.name == "ory_wsgi.pipeline"
    ]
    assert ("not RFC 7662" in line or "could not be read" in line) and token not in line
    # Never cached: the next request asks again.
    app.get("/x", headers=bearer(token))
    assert fake_hydra.calls(token) == 2


def test_an_active_answer_without_subject_or_past_exp_is_401(fake_hydra: FakeHydra) -> None:
    app = gateway(fake_hydra)
    nobody = fake_hydra.issue("ada")
    fake_hydra.answer_with(nobody, {"active": True, "scope": "x"})
    assert app.get("/x", headers=bearer(nobody)).status_code == 401
    stale = fake_hydra.issue("ada")
    fake_hydra.answer_with(stale, {"active": True, "sub": "ada", "exp": time.time() - 5})
    assert app.get("/x", headers=bearer(stale)).status_code == 401


@pytest.mark.parametrize(
    "token",
    ["ory_at_" + "a" * 5000, "ory_at_a\x01b", "ory_at_\u00e9t\u00e9", "ory_at_a b"],
)
def test_malformed_or_huge_tokens_are_refused_without_asking_hydra(
    fake_hydra: FakeHydra, token: str
) -> None:
    app = gateway(fake_hydra, token_from={"header": "X-Api-Token"})
    assert app.get("/x", headers={"X-Api-Token": token}).status_code in (400, 401)
    assert fake_hydra.introspection_calls == 0


@pytest.mark.parametrize(("status", "expected"), [(503, 503), (500, 503), (404, 503), (401, 503)])
def test_hydra_failing_is_503_never_200(fake_hydra: FakeHydra, status: int, expected: int) -> None:
    token = fake_hydra.issue("ada")
    app = gateway(fake_hydra)
    fake_hydra.fail_introspection(status)
    refused = app.get("/x", headers=bearer(token))
    assert refused.status_code == expected and refused.headers["Retry-After"] == "5"
    fake_hydra.fault = None
    assert app.get("/x", headers=bearer(token)).status_code == 200
    assert fake_hydra.calls(token) == 2


def test_hydra_429_is_passed_on_with_its_retry_after(fake_hydra: FakeHydra) -> None:
    token = fake_hydra.issue("ada")
    fake_hydra.fail_introspection(429, retry_after="7")
    answer = gateway(fake_hydra).get("/x", headers=bearer(token))
    assert answer.status_code == 429 and answer.headers["Retry-After"] == "7"


def test_hydra_unreachable_is_503_after_give_up_after() -> None:
    server = serve_hydra()
    hydra = server.hydra
    token = hydra.issue("ada")
    app = gateway(hydra, retry={"max_delay": "100ms", "give_up_after": "300ms"})
    assert app.get("/x", headers=bearer(token)).status_code == 200
    server.stop()
    started = time.monotonic()
    refused = app.get("/x", headers=bearer(hydra.issue("bob")))
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "5"
    assert 0.25 <= time.monotonic() - started < 3


def test_one_introspection_per_token_per_ttl(fake_hydra: FakeHydra) -> None:
    app = gateway(fake_hydra, cache={"ttl": "500ms"})
    ada, bob = fake_hydra.issue("ada"), fake_hydra.issue("bob")
    for _ in range(5):
        assert app.get("/x", headers=bearer(ada)).status_code == 200
        assert app.get("/x", headers=bearer(bob)).status_code == 200
    assert (fake_hydra.calls(ada), fake_hydra.calls(bob)) == (1, 1)
    time.sleep(0.6)
    assert app.get("/x", headers=bearer(ada)).status_code == 200
    assert fake_hydra.calls(ada) == 2


def test_cache_off_asks_every_time(fake_hydra: FakeHydra) -> None:
    token = fake_hydra.issue("ada")
    app = gateway(fake_hydra, cache={"enabled": False})
    for _ in range(3):
        assert app.get("/x", headers=bearer(token)).status_code == 200
    assert fake_hydra.calls(token) == 3


def test_the_cache_never_keeps_a_token_past_its_exp(fake_hydra: FakeHydra) -> None:
    app = gateway(fake_hydra, cache={"ttl": "1h"})
    token = fake_hydra.issue("ada", ttl=1.5)
    assert app.get("/x", headers=bearer(token)).status_code == 200
    assert app.get("/x", headers=bearer(token)).status_code == 200
    assert fake_hydra.calls(token) == 1
    time.sleep(1.6)
    assert app.get("/x", headers=bearer(token)).status_code == 401
    assert fake_hydra.calls(token) == 2


def test_inactive_answers_are_kept_briefly(fake_hydra: FakeHydra) -> None:
    app = gateway(fake_hydra, cache={"ttl": "1h"})
    unknown = "ory_at_not.issued"
    for _ in range(3):
        assert app.get("/x", headers=bearer(unknown)).status_code == 401
    assert fake_hydra.calls(unknown) == 1
    time.sleep(2.1)
    assert app.get("/x", headers=bearer(unknown)).status_code == 401
    assert fake_hydra.calls(unknown) == 2


def test_concurrent_first_requests_make_one_introspection(fake_hydra: FakeHydra) -> None:
    app = gateway(fake_hydra)
    token = fake_hydra.issue("ada")
    fake_hydra.delay = 0.3
    statuses: list[int] = []

    def call() -> None:
        statuses.append(app.get("/x", headers=bearer(token)).status_code)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert statuses == [200] * 8
    assert fake_hydra.calls(token) == 1


def test_the_cache_is_per_url_and_required_scope_sent(fake_hydra: FakeHydra) -> None:
    token = fake_hydra.issue("ada", scope=["photos.read"])
    wide = gateway(fake_hydra)
    narrow = gateway(fake_hydra, required_scope=["videos.read"])
    assert wide.get("/x", headers=bearer(token)).status_code == 200
    # Hydra checks the scope: the cached unscoped answer is not reused for it.
    assert narrow.get("/x", headers=bearer(token)).status_code == 401
    assert fake_hydra.calls(token) == 2


def test_pre_authorization_fetches_one_token_for_many_introspections(
    fake_hydra: FakeHydra,
) -> None:
    fake_hydra.require_introspection_auth = True
    fake_hydra.add_client("gate", "s3cret", scope=["introspect"])
    pre = {
        "enabled": True,
        "client_id": "gate",
        "client_secret": "s3cret",
        "token_url": fake_hydra.token_url,
        "scope": ["introspect"],
    }
    app = gateway(fake_hydra, pre_authorization=pre, introspection_request_headers={"X-A": "b"})
    for subject in ("ada", "bob", "cy"):
        answer = app.get("/x", headers=bearer(fake_hydra.issue(subject)))
        assert answer.status_code == 200 and answer.json is not None
        assert answer.json["subject"] == subject
    assert fake_hydra.token_calls == 1
    sent = fake_hydra.seen_headers[-1]
    assert sent["Authorization"].startswith("Bearer ory_at_") and sent["X-A"] == "b"
    # Hydra stops accepting that token: one more is fetched and the request still decides.
    fake_hydra.revoke(sent["Authorization"].removeprefix("Bearer "))
    assert app.get("/x", headers=bearer(fake_hydra.issue("dee"))).status_code == 200
    assert fake_hydra.token_calls == 2


def test_pre_authorization_failing_is_503(fake_hydra: FakeHydra) -> None:
    pre = {
        "enabled": True,
        "client_id": "gate",
        "client_secret": "wrong",
        "token_url": fake_hydra.token_url,
    }
    refused = gateway(fake_hydra, pre_authorization=pre).get(
        "/x", headers=bearer(fake_hydra.issue("ada"))
    )
    assert refused.status_code == 503
    assert fake_hydra.introspection_calls == 0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"introspection_url": "file:///etc/passwd"}, "introspection_url must be"),
        ({"introspection_url": "http://user:pw@hydra/x"}, "must not hold credentials"),
        ({"introspection_url": ""}, "introspection_url must be"),
        ({"scope_strategy": "regex"}, "scope_strategy must be"),
        ({"required_scope": "photos"}, "must be a list"),
        ({"token_from": {"header": "A", "cookie": "b"}}, "exactly one"),
        ({"introspection_request_headers": {"X-A": "a\r\nX-B: 1"}}, "must be one line"),
        ({"introspection_request_headers": {"Host": "evil"}}, "cannot be set"),
        ({"introspection_request_headers": {"Bad Name": "x"}}, "not a valid header name"),
        ({"pre_authorization": {"enabled": True, "client_id": "a"}}, "are required"),
        ({"cache": {"ttl": "soon"}}, "cache.ttl"),
        ({"cache": {"size": 3}}, "unknown config key"),
        ({"retry": {"max_delay": "0s"}}, "max_delay must be"),
        ({"introspection_uri": "http://x"}, "did you mean"),
    ],
)
def test_config_is_checked_at_load(
    fake_hydra: FakeHydra, changes: dict[str, Any], message: str
) -> None:
    handler = AUTHENTICATORS["oauth2_introspection"](services(fake_hydra.url))
    config = {"introspection_url": fake_hydra.introspection_url, **changes}
    with pytest.raises(ConfigError, match=message) as failed:
        handler.prepare(config, WHERE)
    assert WHERE in str(failed.value)


def test_the_example_in_the_docs(fake_hydra: FakeHydra) -> None:
    (block,) = [b for b in doc_blocks("yaml", DOC) if "oauth2_introspection" in b]
    # The example's Hydra (public 4444, admin 4445) is the stand-in, which serves both.
    block = block.replace("http://hydra:4444", fake_hydra.url)
    block = block.replace("http://hydra:4445", fake_hydra.url)
    (rule,) = parse_document(decode_document(block.encode(), DOC), DOC, ".")
    app = serving(fake_hydra, rule)
    photos, site = "/photos/1", "https://api.example.com"
    good = fake_hydra.issue("ada", scope=["photos"], audience=["photos-api"])
    answer = app.get(photos, base_url=site, headers=bearer(good))
    assert answer.status_code == 200 and answer.json is not None
    assert answer.json["headers"]["X-User-Id"] == "ada"
    unscoped = fake_hydra.issue("ada", scope=["videos"], audience=["photos-api"])
    assert app.get(photos, base_url=site, headers=bearer(unscoped)).status_code == 403
    # Not a Hydra access token: not this authenticator's, and no other is responsible.
    other = app.get(photos, base_url=site, headers=bearer("eyJhbGciOi.x.y"))
    assert other.status_code == 401
    assert fake_hydra.introspection_calls == 2


def test_a_later_handler_changing_extra_leaves_the_cached_answer_alone(
    fake_hydra: FakeHydra,
) -> None:
    handler = AUTHENTICATORS["oauth2_introspection"](services(fake_hydra.url))
    prepared = handler.prepare({"introspection_url": fake_hydra.introspection_url}, WHERE)
    token = fake_hydra.issue("ada", ext={"roles": ["reader"]})
    request = facts(headers=Headers(bearer(token)))
    first = session_with()
    handler.authenticate(request, first, prepared)
    first.extra["roles"].append("admin")
    first.extra["client_id"] = "someone-else"
    second = session_with()
    handler.authenticate(request, second, prepared)
    assert second.extra["roles"] == ["reader"]
    assert second.extra["client_id"] == "ory-wsgi-test"
    assert fake_hydra.calls(token) == 1


def test_the_pre_authorization_token_is_refreshed_before_it_expires(
    fake_hydra: FakeHydra,
) -> None:
    fake_hydra.require_introspection_auth = True
    fake_hydra.add_client("gate", "s3cret", ttl=2)
    pre = {
        "enabled": True,
        "client_id": "gate",
        "client_secret": "s3cret",
        "token_url": fake_hydra.token_url,
    }
    app = gateway(fake_hydra, pre_authorization=pre, cache={"enabled": False})
    token = fake_hydra.issue("ada")
    assert app.get("/x", headers=bearer(token)).status_code == 200
    assert app.get("/x", headers=bearer(token)).status_code == 200
    assert fake_hydra.token_calls == 1
    # Refreshed a tenth of its lifetime early (0.2 s of 2 s): before Hydra would refuse it.
    time.sleep(1.85)
    assert app.get("/x", headers=bearer(token)).status_code == 200
    assert fake_hydra.token_calls == 2
    assert fake_hydra.introspection_calls == 3
