"""Mutators in-process: id_token (verified against a real key set's JWKS), header, cookie, noop."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import tomllib
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest
from joserfc import jwt
from test_keys import make_session, published
from test_rules_loader import doc_blocks
from werkzeug.datastructures import Headers
from werkzeug.http import parse_cookie

from ory_wsgi.errors import ConfigError
from ory_wsgi.keys import KeySet, rotate_key_set_file
from ory_wsgi.paths import normalise_path
from ory_wsgi.pipeline.error_handlers import ERROR_HANDLERS
from ory_wsgi.pipeline.errors import DecisionError
from ory_wsgi.pipeline.mutators import MUTATORS
from ory_wsgi.pipeline.mutators.id_token import MAX_MINTERS
from ory_wsgi.pipeline.services import Services
from ory_wsgi.pipeline.state import AuthSession, RequestFacts
from ory_wsgi.rules.loader import build_rule_set, decode_document, parse_document
from ory_wsgi.rules.matcher import Matcher
from ory_wsgi.rules.model import AccessRule
from ory_wsgi.rules.template import MatchContext, RequestURL
from ory_wsgi.settings import JwtSettings, ProxySettings, Settings

PUBLIC = "https://app.example.com"
WHERE = 'rule "r1" mutators[0]'


@pytest.fixture
def key_set(tmp_path: Path) -> KeySet:
    # check_interval=0: a rotation on disk is seen by the next mint.
    return KeySet.ensure("", str(tmp_path / "state"), check_interval=0)


def make_services(key_set: KeySet | None, **jwt: Any) -> Services:
    settings = Settings(jwt=JwtSettings(**jwt))
    return Services(settings, PUBLIC, key_set, None, None, frozenset())


@pytest.fixture
def services(key_set: KeySet) -> Services:
    return make_services(key_set)


def facts(path: str = "/api/things", headers: Headers | None = None) -> RequestFacts:
    normalised = normalise_path(path)
    return RequestFacts(
        method="GET",
        methods=("GET",),
        scheme="https",
        host="app.example.com",
        path=normalised,
        query="",
        target=normalised.path,
        headers=headers if headers is not None else Headers(),
        remote_addr="203.0.113.9",
        request_id="req-1",
        environ={},
    )


def kratos_session(**changes: Any) -> AuthSession:
    ory = make_session(**changes)
    url = RequestURL("https", "app.example.com", "/api/things")
    return AuthSession(
        match=MatchContext(("things",), url, "GET", Headers()),
        subject=ory["identity"]["id"],
        extra=ory,
        ory_session=ory,
        authenticator="cookie_session",
    )


def anonymous_session() -> AuthSession:
    return AuthSession(match=MatchContext(), subject="anonymous", authenticator="anonymous")


def mutate(
    services: Services, name: str, config: dict[str, Any], session: AuthSession, **kw: Any
) -> AuthSession:
    handler = MUTATORS[name](services)
    handler.mutate(facts(**kw), session, handler.prepare(config, WHERE))
    return session


def claims_of(session: AuthSession, key_set: KeySet) -> dict[str, Any]:
    """What an app behind the proxy does: ES256 only, against the published JWKS."""
    scheme, _, token = session.header["Authorization"].partition(" ")
    assert scheme == "Bearer"
    decoded = jwt.decode(token, published(key_set), algorithms=["ES256"])
    jwt.JWTClaimsRegistry(exp={"essential": True}, nbf={"essential": True}).validate(decoded.claims)
    return dict(decoded.claims)


# --- id_token ---------------------------------------------------------------


def test_id_token_signs_the_session_for_its_subject(services: Services, key_set: KeySet) -> None:
    session = mutate(services, "id_token", {}, kratos_session())
    claims = claims_of(session, key_set)
    assert claims["sub"] == session.subject == "8b9c1c2e-0e5b-4a8e-9a55-2b4a0c6d7e11"
    assert claims["iss"] == PUBLIC  # no [jwt] issuer: the public URL
    assert claims["session"] == session.ory_session
    assert claims["exp"] - claims["iat"] == 60  # [jwt] ttl
    assert "aud" not in claims


def test_id_token_defaults_come_from_jwt_settings(key_set: KeySet) -> None:
    services = make_services(
        key_set,
        issuer="https://issuer.example",
        audience="app",
        ttl=120.0,
        claims={"email": "identity.traits.email"},
    )
    claims = claims_of(mutate(services, "id_token", {}, kratos_session()), key_set)
    assert claims["iss"] == "https://issuer.example"
    assert claims["aud"] == "app"
    assert claims["exp"] - claims["iat"] == 120
    assert claims["email"] == "ada@example.com"


def test_id_token_rule_config(services: Services, key_set: KeySet) -> None:
    config = {
        "issuer_url": "https://rules.example",
        "ttl": "1h30m",
        "audience": "billing",
        "claims": '{"aud": ["ignored"],'
        ' "tenant": "{{ printIndex .MatchContext.RegexpCaptureGroups 0 }}",'
        ' "email": "{{ print .Extra.identity.traits.email }}"}',
    }
    claims = claims_of(mutate(services, "id_token", config, kratos_session()), key_set)
    assert claims["iss"] == "https://rules.example"
    assert claims["exp"] - claims["iat"] == 5400
    assert claims["aud"] == "billing"  # `audience` wins over the claims' aud
    assert claims["tenant"] == "things" and claims["email"] == "ada@example.com"


def test_id_token_claims_aud_wins_over_the_jwt_audience(key_set: KeySet) -> None:
    services = make_services(key_set, audience="app")
    config = {"claims": '{"aud": ["foo", "bar"]}'}
    claims = claims_of(mutate(services, "id_token", config, kratos_session()), key_set)
    assert claims["aud"] == ["foo", "bar"]


@pytest.mark.parametrize("claim", ["iss", "sub", "exp", "iat", "nbf", "jti", "session"])
def test_id_token_our_claims_cannot_be_set_by_the_template(
    services: Services, key_set: KeySet, claim: str
) -> None:
    config = {"claims": json.dumps({claim: "{{ print .Extra.identity.traits.email }}"})}
    claims = claims_of(mutate(services, "id_token", config, kratos_session()), key_set)
    assert claims[claim] != "ada@example.com"


@pytest.mark.parametrize(
    "email",
    ['x", "admin": true, "y": "', "x\\", '"}', "\u2028\x00</script>"],
)
def test_id_token_session_data_cannot_add_claims(
    services: Services, key_set: KeySet, email: str
) -> None:
    session = kratos_session()
    session.extra = {"identity": {"traits": {"email": email}}}
    config = {"claims": '{"email": "{{ print .Extra.identity.traits.email }}"}'}
    claims = claims_of(mutate(services, "id_token", config, session), key_set)
    assert claims["email"] == email
    assert "admin" not in claims


def test_id_token_signs_for_any_subject_by_default(services: Services, key_set: KeySet) -> None:
    claims = claims_of(mutate(services, "id_token", {}, anonymous_session()), key_set)
    assert claims["sub"] == "anonymous"
    assert "session" not in claims


def test_id_token_only_with_session(services: Services, key_set: KeySet) -> None:
    config = {"only_with_session": True}
    assert "Authorization" not in mutate(services, "id_token", config, anonymous_session()).header
    claims = claims_of(mutate(services, "id_token", config, kratos_session()), key_set)
    assert claims["session"]["id"] == make_session()["id"]


def test_id_token_tokens_are_cached_per_subject_and_rendered_claims(
    services: Services, key_set: KeySet
) -> None:
    handler = MUTATORS["id_token"](services)
    prepared = handler.prepare({"claims": '{"path": "{{ .MatchContext.URL.Path }}"}'}, WHERE)

    def token(session: AuthSession) -> str:
        handler.mutate(facts(), session, prepared)
        return session.header["Authorization"]

    first = token(kratos_session())
    assert token(kratos_session()) == first
    assert token(anonymous_session()) == token(anonymous_session()) != first
    other = kratos_session()
    other.match = dataclasses.replace(other.match, url=RequestURL("https", "x", "/other"))
    assert token(other) != first
    stepped_up = kratos_session(authenticator_assurance_level="aal2")
    assert token(stepped_up) != first
    rotate_key_set_file(key_set.path)
    rotated = token(kratos_session())
    assert rotated != first
    assert jwt.decode(rotated[7:], published(key_set)).header["kid"] == key_set.signing_kid


def test_id_token_one_minter_per_distinct_config(services: Services) -> None:
    handler = MUTATORS["id_token"](services)
    a = handler.prepare({"ttl": "5m", "claims": "{}"}, WHERE)
    b = handler.prepare({"ttl": 300, "claims": "{}"}, 'rule "r2" mutators[0]')
    c = handler.prepare({"ttl": "6m", "claims": "{}"}, WHERE)
    assert a.minter is b.minter
    assert c.minter is not a.minter


def test_id_token_minters_do_not_pile_up_over_reloads(services: Services) -> None:
    handler = MUTATORS["id_token"](services)
    first = handler.prepare({"ttl": 2}, WHERE)
    for ttl in range(3, MAX_MINTERS + 10):
        handler.prepare({"ttl": ttl}, WHERE)
    again = handler.prepare({"ttl": 2}, WHERE)
    assert again.minter is not first.minter
    assert len(handler._minters) == MAX_MINTERS
    session = kratos_session()
    handler.mutate(facts(), session, first)  # a rule prepared earlier keeps working
    assert session.header["Authorization"].startswith("Bearer ")


def test_id_token_jwks_url_is_ignored_with_one_warning(
    services: Services, key_set: KeySet, caplog: pytest.LogCaptureFixture
) -> None:
    handler = MUTATORS["id_token"](services)
    with caplog.at_level(logging.WARNING, logger="ory_wsgi.pipeline.mutators"):
        for rule in ("a", "b"):
            handler.prepare({"jwks_url": "file:///etc/oathkeeper/jwks.json"}, f'rule "{rule}"')
    assert [r.getMessage() for r in caplog.records if "jwks_url" in r.getMessage()] == [
        'rule "a": id_token jwks_url is ignored: tokens are signed with the [jwt] key set '
        "(published at /.ory/jwks.json)"
    ]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"claims": "{not json"}, "claims: not JSON"),
        ({"claims": "[1, 2]"}, "claims: must be a JSON object"),
        ({"claims": "{{ .Nope }}"}, 'unknown field "Nope"'),
        ({"ttl": "15 minutes"}, "ttl must be a duration"),
        ({"ttl": "0s"}, "ttl must be between 1s and a year"),
        ({"ttl": True}, "ttl must be a duration"),
        ({"audience": ["a"]}, "audience must be a string"),
        ({"only_with_session": "yes"}, "only_with_session must be true or false"),
        ({"claim": "{}"}, "unknown config key 'claim' (did you mean \"claims\"?)"),
    ],
)
def test_id_token_bad_config_is_refused_at_load(
    services: Services, config: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=r"^rule \"r1\" mutators\[0\].*" + re.escape(message)):
        MUTATORS["id_token"](services).prepare(config, WHERE)


def test_id_token_needs_the_jwt_key_set() -> None:
    with pytest.raises(ConfigError, match=r"\[jwt\] enabled = false"):
        MUTATORS["id_token"](make_services(None)).prepare({}, WHERE)


@pytest.mark.parametrize("rendered", ["[1]", "nope", '{"a": NaN}', '"text"'])
def test_id_token_claims_that_render_no_json_object_refuse_the_request(
    services: Services, rendered: str, caplog: pytest.LogCaptureFixture
) -> None:
    session = kratos_session()
    session.extra = {"claims": rendered}
    with pytest.raises(DecisionError) as caught:
        mutate(services, "id_token", {"claims": "{{ .Extra.claims }}"}, session)
    assert caught.value.status == 500
    assert "Authorization" not in session.header
    assert any("id_token claims" in r.getMessage() for r in caplog.records)


# --- header -----------------------------------------------------------------


def test_header_sets_rendered_headers_with_canonical_names(services: Services) -> None:
    config = {
        "headers": {
            "x-user-id": "{{ print .Subject }}",
            "X-User-Email": "{{ print .Extra.identity.traits.email }}",
            "X-Echo": 'id={{ .Header.Get "X-User-Id" }}',
            "X-Static": "v1",
        }
    }
    session = mutate(services, "header", config, kratos_session())
    assert session.header == {
        "X-User-Id": session.subject,
        "X-User-Email": "ada@example.com",
        "X-Echo": f"id={session.subject}",
        "X-Static": "v1",
    }


@pytest.mark.parametrize("bad", ["a\r\nX-Admin: 1", "a\nb", "a\rb", "a\x00b", "a\x0bb", "\x7f"])
def test_header_values_with_control_characters_refuse_the_request(
    services: Services, bad: str, caplog: pytest.LogCaptureFixture
) -> None:
    session = kratos_session()
    session.extra = {"name": bad}
    with pytest.raises(DecisionError) as caught:
        mutate(services, "header", {"headers": {"X-Name": "{{ .Extra.name }}"}}, session)
    assert caught.value.status == 500 and caught.value.error_id == "internal_server_error"
    assert "X-Name" not in session.header
    assert [r.getMessage() for r in caplog.records] == [
        'rule "r1" mutators[0]: the value rendered for X-Name holds a control character; refused'
    ]


def test_header_values_outside_latin1_go_as_utf8_bytes(services: Services) -> None:
    session = kratos_session()
    session.extra = {"name": "Zoë 名前\t"}
    mutate(services, "header", {"headers": {"X-Name": "{{ .Extra.name }}"}}, session)
    assert session.header["X-Name"].encode("latin-1").decode("utf-8") == "Zoë 名前\t"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("Content-Length", "cannot be set by a rule"),
        ("transfer-encoding", "cannot be set by a rule"),
        ("Host", "cannot be set by a rule"),
        ("Connection", "cannot be set by a rule"),
        ("X Bad", "not a valid header name"),
        ("X-A:b", "not a valid header name"),
        ("", "not a valid header name"),
    ],
)
def test_header_names_are_checked_at_load(services: Services, name: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        MUTATORS["header"](services).prepare({"headers": {name: "v"}}, WHERE)


@pytest.mark.parametrize(
    "config", [{"headers": {"X-A": "a\nb"}}, {"headers": {"X-A": 5}}, {"headers": "X-A"}]
)
def test_header_bad_values_are_refused_at_load(services: Services, config: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=r"^rule \"r1\" mutators\[0\]"):
        MUTATORS["header"](services).prepare(config, WHERE)


# --- cookie -----------------------------------------------------------------


def test_cookie_sets_rule_cookies_and_keeps_the_clients_others(services: Services) -> None:
    headers = Headers([("Cookie", "theme=dark; user=forged; ory_session_x=abc")])
    config = {"cookies": {"user": "{{ print .Subject }}", "plan": "gold"}}
    session = mutate(services, "cookie", config, kratos_session(), headers=headers)
    assert session.header["Cookie"] == (
        f"user={session.subject}; plan=gold; theme=dark; ory_session_x=abc"
    )


@pytest.mark.parametrize(
    "client",
    [
        "user=forged",
        " user = forged ",
        "user",
        "x=1, user=forged",
        "user=forged; user=again",
        "theme=dark;user=forged",
    ],
)
def test_cookie_a_client_cannot_send_a_rule_cookie(services: Services, client: str) -> None:
    headers = Headers([("Cookie", client)])
    session = mutate(
        services, "cookie", {"cookies": {"user": "real"}}, anonymous_session(), headers=headers
    )
    assert "forged" not in session.header["Cookie"] and "again" not in session.header["Cookie"]
    assert session.header["Cookie"].startswith("user=real")
    assert SimpleCookie(session.header["Cookie"])["user"].value == "real"
    assert parse_cookie(session.header["Cookie"]).getlist("user") == ["real"]


def test_forget_drops_every_token_of_a_session(services: Services) -> None:
    handler = MUTATORS["id_token"](services)
    prepared = handler.prepare({}, WHERE)
    handler.mutate(facts(), kratos_session(), prepared)
    assert prepared.minter.cached_tokens == 1
    prepared.minter.forget(make_session()["id"])
    assert prepared.minter.cached_tokens == 0


def test_cookie_without_client_cookies(services: Services) -> None:
    session = mutate(services, "cookie", {"cookies": {"a": "1"}}, anonymous_session())
    assert session.header == {"Cookie": "a=1"}


@pytest.mark.parametrize(
    ("value", "sent"),
    [
        ("x; admin=1", '"x admin=1"'),
        ("a\r\nX-Admin: 1", '"aX-Admin: 1"'),
        ('q"u\\o,te', '"quo,te"'),
        ("Zoë", "Zo"),
        ("plain", "plain"),
    ],
)
def test_cookie_values_are_made_safe_as_go_does(services: Services, value: str, sent: str) -> None:
    session = kratos_session()
    session.extra = {"v": value}
    mutate(services, "cookie", {"cookies": {"c": "{{ .Extra.v }}"}}, session)
    assert session.header["Cookie"] == f"c={sent}"
    assert list(parse_cookie(session.header["Cookie"])) == ["c"]


def test_cookie_builds_on_an_earlier_mutators_cookie_header(services: Services) -> None:
    session = kratos_session()
    session.header["Cookie"] = "a=1; b=2"
    mutate(
        services, "cookie", {"cookies": {"b": "3"}}, session, headers=Headers([("Cookie", "z=9")])
    )
    assert session.header["Cookie"] == "b=3; a=1"


@pytest.mark.parametrize(
    "config",
    [
        {"cookies": {"a b": "1"}},
        {"cookies": {"a;": "1"}},
        {"cookies": {"a": "x;y"}},
        {"cookie": {}},
    ],
)
def test_cookie_bad_config_is_refused_at_load(services: Services, config: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=r"^rule \"r1\" mutators\[0\]"):
        MUTATORS["cookie"](services).prepare(config, WHERE)


# --- noop -------------------------------------------------------------------


def test_noop_changes_nothing(services: Services) -> None:
    session = mutate(services, "noop", {}, kratos_session())
    assert session.header == {} and session.cookies == {}
    with pytest.raises(ConfigError, match="unknown config key"):
        MUTATORS["noop"](services).prepare({"headers": {}}, WHERE)


# --- the examples of docs/rules-handlers.md, word for word ------------------

DOC = "rules-handlers.md"


def doc_rules(language: str) -> list[AccessRule]:
    rules: list[AccessRule] = []
    for block in doc_blocks(language, DOC):
        if block.startswith(("- id:", "[")):
            rules += parse_document(decode_document(block.encode(), DOC), DOC, ".")
    return rules


def run_mutators(services: Services, rule: AccessRule, session: AuthSession, **kw: Any) -> None:
    for index, step in enumerate(rule.mutators):
        handler = MUTATORS[step.handler](services)
        prepared = handler.prepare(step.config, f"{rule.where} mutators[{index}]")
        handler.mutate(facts(**kw), session, prepared)


def choose_error(
    services: Services, rule: AccessRule, error: DecisionError, request: RequestFacts
) -> DecisionError | None:
    """The first of the rule's error handlers whose `when` accepts the error, answering it."""
    for index, step in enumerate(rule.errors):
        handler = ERROR_HANDLERS[step.handler](services)
        prepared = handler.prepare(step.config, f"{rule.where} errors[{index}]")
        if handler.matches(request, error, prepared):
            answer = handler.answer(request, error, prepared)
            assert isinstance(answer, DecisionError)
            return answer
    return None


@pytest.fixture
def doc_services(key_set: KeySet) -> Services:
    settings = Settings(proxy=ProxySettings(trusted_proxies=("10.0.0.0/8",)))
    return Services(settings, PUBLIC, key_set, None, None, frozenset())


def browser(target: str) -> RequestFacts:
    accept = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    return dataclasses.replace(facts(), target=target, headers=Headers([("Accept", accept)]))


def request_with(headers: list[tuple[str, str]], **changes: Any) -> RequestFacts:
    return dataclasses.replace(facts(), headers=Headers(headers), **changes)


def unauthorized() -> DecisionError:
    return DecisionError(401, "unauthorized", "The request could not be authorized")


def test_doc_members_rule(doc_services: Services, key_set: KeySet) -> None:
    rules = doc_rules("yaml")
    assert [rule.id for rule in rules] == ["members", "admin"]
    members = rules[0]
    found = Matcher(build_rule_set([(members,)])).match(
        "GET", "https", "app.example.com", "/members/ada-1"
    )
    assert found is not None and found.capture_groups == ("ada-1",)
    session = kratos_session()
    session.match = dataclasses.replace(session.match, regexp_capture_groups=found.capture_groups)
    client_cookies = Headers([("Cookie", "member=forged; theme=dark")])
    run_mutators(doc_services, members, session, headers=client_cookies)
    claims = claims_of(session, key_set)
    assert claims["aud"] == ["members"] and claims["email"] == "ada@example.com"
    assert claims["exp"] - claims["iat"] == 300
    assert session.header["X-User-Id"] == session.subject
    assert session.header["X-Member-Page"] == "ada-1"
    assert session.header["Cookie"] == f"member={session.subject}; theme=dark"

    target = "/members/ada-1?tab=2"
    login = choose_error(doc_services, members, unauthorized(), browser(target=target))
    assert login is not None and login.status == 303
    assert login.header("Location") == (
        "https://app.example.com/.ory/self-service/login/browser"
        "?return_to=https%3A%2F%2Fapp.example.com%2Fmembers%2Fada-1%3Ftab%3D2"
    )
    api = choose_error(doc_services, members, unauthorized(), request_with([]))
    assert api is not None and api.status == 401
    envelope = next(b for b in doc_blocks("", DOC) if b.startswith('{"error"'))
    assert api.body == envelope.strip().encode()


def test_doc_admin_rule_when_clauses(doc_services: Services) -> None:
    admin = doc_rules("yaml")[1]
    staff = request_with([("X-Forwarded-For", "10.1.2.3")], remote_addr="10.0.0.1")
    answer = choose_error(doc_services, admin, unauthorized(), staff)
    assert answer is not None and answer.status == 401
    assert answer.header("WWW-Authenticate") == 'Basic realm="Staff only"'
    # The same X-Forwarded-For from a client that is not a trusted proxy counts for nothing.
    spoofed = dataclasses.replace(browser(target="/admin/x"), remote_addr="203.0.113.5")
    spoofed = dataclasses.replace(
        spoofed, headers=Headers([*spoofed.headers.items(), ("X-Forwarded-For", "10.1.2.3")])
    )
    answer = choose_error(doc_services, admin, unauthorized(), spoofed)
    assert answer is not None and answer.status == 302
    assert answer.header("Location") == (
        "/login?return_to=https%3A%2F%2Fapp.example.com%2Fadmin%2Fx"
    )
    forbidden = DecisionError(403, "forbidden", "The requested action was forbidden")
    api = request_with([("Content-Type", "application/json; charset=utf-8")])
    answer = choose_error(doc_services, admin, forbidden, api)
    assert answer is not None and answer.status == 403 and answer.body is not None
    # A form post (text/plain here) is answered by json only for the errors it lists.
    form = request_with([("Content-Type", "text/plain")])
    down = DecisionError(503, "ory_unavailable", "The login service is unavailable")
    answer = choose_error(doc_services, admin, down, form)
    assert answer is not None and answer.status == 503
    # None of them takes its 404: [errors] fallback answers it.
    assert choose_error(doc_services, admin, DecisionError(404, "not_found", "no"), form) is None
    # A request without Content-Type counts as application/octet-stream: application/*.
    assert choose_error(
        doc_services, admin, DecisionError(404, "not_found", "no"), request_with([])
    )


def test_doc_api_rule_json(
    doc_services: Services, key_set: KeySet, caplog: pytest.LogCaptureFixture
) -> None:
    (api,) = doc_rules("json")
    anonymous = anonymous_session()
    with caplog.at_level(logging.WARNING, logger="ory_wsgi.pipeline.mutators"):
        run_mutators(doc_services, api, anonymous)
    assert "Authorization" not in anonymous.header
    assert any("jwks_url is ignored" in r.getMessage() for r in caplog.records)
    session = kratos_session()
    run_mutators(doc_services, api, session)
    claims = claims_of(session, key_set)
    assert claims["iss"] == "https://app.example.com/" and claims["aud"] == "api"
    assert claims["exp"] - claims["iat"] == 3600


def test_doc_header_toml(doc_services: Services) -> None:
    (block,) = [b for b in doc_blocks("toml", DOC) if "[mutators.header]" in b]
    table = tomllib.loads(block)["mutators"]["header"]
    assert table["enabled"] is True
    session = mutate(doc_services, "header", table["config"], kratos_session())
    assert session.header == {"X-User-Id": session.subject, "X-Proxy": "ory-wsgi"}
