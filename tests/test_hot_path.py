"""The hot path's shortcuts give exactly what the long way gives.

`read_path` against `normalise_path` over hostile spellings; `read_target`
read once per request line, never carried over to a copy of the environ with
another one (the decisions endpoint's); a request without any credential on a
`quiet` rule is allowed as running its handlers would allow it, and only there.
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import requests
from joserfc import jwt
from ory_flows import PASSWORD, Start, bearer_of, jwks, login
from pipeline_app import registry, services
from pytest_httpserver import HTTPServer
from werkzeug.test import EnvironBuilder

from ory_wsgi.errors import BadRequest
from ory_wsgi.keys import KeySet
from ory_wsgi.ory.client import extract_credentials
from ory_wsgi.paths import normalise_path
from ory_wsgi.pipeline.decision import Allow, Pipeline
from ory_wsgi.pipeline.request import TARGET_KEY, read_path, read_target, request_facts
from ory_wsgi.rules.matcher import Matcher
from ory_wsgi.rules.model import AccessRule, Handler, Match, RuleSet
from ory_wsgi.settings import load_settings
from ory_wsgi.testing import FakeKratos
from ory_wsgi.upstream.forwarder import request_target

SPELLINGS = [
    "/",
    "/hello",
    "/a/b/",
    "/api/v1/users/42",
    "/a.b/c~d_e-f",
    "//a",
    "/a//b",
    "/a/./b",
    "/a/../b",
    "/a/..",
    "/a/.",
    "/a.",
    "/a./b",
    "/.well-known/x",
    "/a;x=1/b",
    "/a%2Fb",
    "/a%2e%2e/b",
    "/a%20",
    "/a ",
    "/a\\b",
    "/a\x00",
    "/MEMBERS",
    "/a?b",
    "a",
    "",
]


def _outcome(fn: Any, path: str) -> Any:
    try:
        return fn(path)
    except BadRequest as exc:
        return ("BadRequest", str(exc))


@pytest.mark.parametrize("path", SPELLINGS)
def test_read_path_is_normalise_path(path: str) -> None:
    assert _outcome(read_path, path) == _outcome(normalise_path, path)


def test_read_path_is_normalise_path_for_random_spellings() -> None:
    alphabet = ["/", "/", "a", "B", ".", "..", ";", "%2e", "%2F", "%41", "~", "-", "_", " ", "\t"]
    rng = random.Random(11)
    plain = 0
    for _ in range(20000):
        path = "/" + "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8)))
        fast = _outcome(read_path, path)
        assert fast == _outcome(normalise_path, path), path
        plain += fast.views == (path,)
    assert plain > 1000  # the shortcut was taken often enough to mean something


def _environ(target: str, **extra: Any) -> dict[str, Any]:
    environ = EnvironBuilder(path=target.partition("?")[0]).get_environ()
    environ["RAW_URI"] = target
    environ.update(extra)
    return environ


def test_read_target_is_read_once_per_request_line() -> None:
    environ = _environ("/a/%2e%2e/b?x=1")
    assert read_target(environ) == request_target(environ) == "/a/%2e%2e/b?x=1"
    assert environ[TARGET_KEY] == ("/a/%2e%2e/b?x=1", "/a/%2e%2e/b?x=1")
    # A copy that speaks of another request (the decisions endpoint's) reads its own.
    copy = dict(environ, RAW_URI="/members/secret", REQUEST_URI="/members/secret")
    assert read_target(copy) == "/members/secret"
    # Absolute form is read as a path, and a bad target is refused every time.
    assert read_target(_environ("http://example.com/p?q")) == "/p?q"
    bad = _environ("/a b")
    for _ in range(2):
        with pytest.raises(BadRequest):
            read_target(bad)


def _rule(rule_id: str, url: str, authenticators: tuple[str, ...], **kwargs: Any) -> AccessRule:
    optional = {"optional": True}
    return AccessRule(
        id=rule_id,
        source="test",
        match=Match(("GET",), url),
        authenticators=tuple(
            Handler(name, optional if name in ("cookie_session", "bearer_token") else {})
            for name in authenticators
        ),
        authorizer=Handler(kwargs.get("authorizer", "allow")),
        mutators=kwargs.get("mutators", (Handler("noop"),)),
    )


SESSION_THEN_NOOP = ("cookie_session", "bearer_token", "noop")


def _pipeline(ory: HTTPServer, *rules: AccessRule, keys: KeySet | None = None) -> Pipeline:
    settings = load_settings(env={}, overrides={"sdk_url": ory.url_for("/")})
    svc = replace(services(ory.url_for("/"), settings), keys=keys)
    matcher = Matcher(RuleSet(rules))
    return Pipeline(registry(svc), lambda: matcher, trusted=True)


def test_only_rules_that_do_nothing_without_a_credential_are_quiet(
    ory: HTTPServer, tmp_path: Path
) -> None:
    jwt_if_session = (Handler("id_token", {"only_with_session": True}),)
    pipeline = _pipeline(
        ory,
        _rule("open", "http://localhost/open", SESSION_THEN_NOOP),
        _rule("noop-only", "http://localhost/noop", ("noop",)),
        _rule("jwt-if-session", "http://localhost/j", SESSION_THEN_NOOP, mutators=jwt_if_session),
        _rule("anonymous", "http://localhost/anon", ("anonymous",)),
        _rule("session-only", "http://localhost/s", ("cookie_session", "bearer_token")),
        _rule("deny", "http://localhost/d", SESSION_THEN_NOOP, authorizer="deny"),
        _rule("noop-first", "http://localhost/nf", ("noop", "anonymous")),
        _rule(
            "header",
            "http://localhost/h",
            SESSION_THEN_NOOP,
            mutators=(Handler("header", {"headers": {"X-Who": "{{ print .Subject }}"}}),),
        ),
        keys=KeySet.ensure("", str(tmp_path / "state")),
    )
    loaded = pipeline.loaded()
    assert loaded is not None
    assert not any(rule.invalid for rule in loaded.prepared.values())
    assert loaded.quiet == {"open", "noop-only", "noop-first", "jwt-if-session"}


@pytest.mark.parametrize(
    "headers",
    [{}, {"Cookie": "other=1"}, {"Authorization": "Basic dTpw"}, {"Cookie": "ory_kratos_session="}],
)
def test_the_shortcut_allows_as_the_handlers_do(ory: HTTPServer, headers: dict[str, str]) -> None:
    pipeline = _pipeline(ory, _rule("open", "http://localhost/<.*>", SESSION_THEN_NOOP))
    environ = _environ("/x/y", **EnvironBuilder(headers=headers).get_environ())
    environ["RAW_URI"] = "/x/y"
    credentials = extract_credentials(environ, services(ory.url_for("/")).cookie_names)
    assert credentials is None  # none of these carries a session credential
    long_way = pipeline.decide(request_facts(environ))
    shortcut = pipeline.decide(request_facts(environ, anonymous=True))
    assert isinstance(long_way, Allow) and isinstance(shortcut, Allow)
    for field in ("rule", "upstream", "headers", "cookies", "protected"):
        assert getattr(shortcut, field) == getattr(long_way, field)
    for field in ("subject", "ory_session", "authenticator", "ory_error", "aal_required"):
        assert getattr(shortcut.session, field) == getattr(long_way.session, field)
    assert shortcut.state == long_way.state


def test_through_the_proxy_only_a_request_without_credentials_takes_the_shortcut(
    start_ory_proxy: Start, fake_ory: FakeKratos
) -> None:
    """On an open path a session still becomes the JWT (token, cookie, bearer), a
    client's own Authorization never passes, and a forged identity header is dropped."""
    proxy = start_ory_proxy('[[protect]]\nprefix = "/members"\n')
    identity = fake_ory.add_identity("grace@example.com", PASSWORD)
    token = fake_ory.create_session(identity["id"])[1]
    url = f"{proxy.url}/open/page"
    for headers in (
        {"X-Session-Token": token},
        {"Authorization": f"Bearer {token}"},
    ):
        answer = requests.get(url, headers=headers, timeout=10)
        assert answer.status_code == 200
        claims = jwt.decode(bearer_of(answer), jwks(proxy), algorithms=["ES256"]).claims
        assert claims["sub"] == identity["id"]
    browser = login(proxy, fake_ory)
    answer = browser.get(url, timeout=10)
    assert answer.status_code == 200 and bearer_of(answer)
    for headers in (
        {},
        {"Authorization": "Basic dTpw"},
        {"Cookie": "other=1", "X-User-Id": "admin", "X-Ory-Subject": "admin"},
    ):
        answer = requests.get(url, headers=headers, timeout=10)
        assert answer.status_code == 200
        seen = {name.lower() for name in answer.json()["headers"]}
        assert not seen & {"authorization", "x-user-id", "x-ory-subject"}, seen
