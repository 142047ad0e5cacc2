"""Pipeline.decide: registry and settings, matching over every reading, refusals, fail closed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pipeline_app import client, registry, services
from pytest_httpserver import HTTPServer
from servers import write_config
from test_ory_client import kratos_session
from werkzeug.test import Client

from ory_wsgi.errors import ConfigError
from ory_wsgi.pipeline.decision import Pipeline
from ory_wsgi.pipeline.shorthand import ProxyErrors
from ory_wsgi.rules.loader import load_rule_set
from ory_wsgi.rules.matcher import Matcher
from ory_wsgi.rules.model import AccessRule, Handler, Match, RuleSet
from ory_wsgi.settings import HandlerSettings, load_settings

COOKIE = "ory_kratos_session=secret-session"
ALL = ("GET", "HEAD", "POST", "PUT", "DELETE")


def access_rule(
    rule_id: str,
    url: str,
    *authenticators: str,
    authorizer: str = "allow",
    methods: tuple[str, ...] = ALL,
    errors: tuple[str, ...] = (),
    config: dict[str, Any] | None = None,
) -> AccessRule:
    return AccessRule(
        id=rule_id,
        source="test",
        match=Match(methods, url),
        authenticators=tuple(Handler(name, config or {}) for name in authenticators),
        authorizer=Handler(authorizer),
        mutators=(Handler("noop"),),
        errors=tuple(Handler(name) for name in errors),
    )


def app(ory: HTTPServer, *rules: AccessRule, trusted: bool = True, **settings: Any) -> Client:
    loaded = load_settings(env={}, overrides={"sdk_url": ory.url_for("/"), **settings})
    svc = services(ory.url_for("/"), loaded)
    matcher = Matcher(RuleSet(rules, default_rule=""))
    status = loaded.access_rules.no_match_status
    return client(Pipeline(registry(svc), lambda: matcher, trusted=trusted, no_match_status=status))


def test_no_rule_is_404_or_the_configured_403(ory: HTTPServer) -> None:
    rule = access_rule("a", "http://localhost/a", "anonymous")
    assert app(ory, rule).get("/a").status_code == 200
    missed = app(ory, rule).get("/b")
    assert missed.status_code == 404
    assert missed.json is not None and missed.json["error"]["code"] == 404
    assert app(ory, rule, access_rules={"no_match_status": 403}).get("/b").status_code == 403
    with pytest.raises(ConfigError, match="no_match_status"):
        load_settings(env={}, overrides={"access_rules": {"no_match_status": 500}})


def test_deny_is_403_and_allow_lets_through(ory: HTTPServer) -> None:
    denied = app(
        ory, access_rule("d", "http://localhost/<.*>", "anonymous", authorizer="deny")
    ).get("/x")
    assert denied.status_code == 403
    assert denied.json is not None and denied.json["error"]["status"] == "Forbidden"


def test_nobody_responsible_is_401(ory: HTTPServer) -> None:
    answer = app(ory, access_rule("r", "http://localhost/<.*>", "anonymous")).get(
        "/x", headers={"Authorization": "Basic dTpw"}
    )
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"] == "Bearer"


def test_a_handler_must_be_enabled_unless_the_rule_is_ours(ory: HTTPServer) -> None:
    rule = access_rule("r", "http://localhost/<.*>", "anonymous")
    assert app(ory, rule, trusted=False).get("/x").status_code == 500
    enabled = {
        "authenticators": {"anonymous": {"enabled": True}},
        "authorizers": {"allow": {"enabled": True}},
        "mutators": {"noop": {"enabled": True}},
    }
    assert app(ory, rule, trusted=False, **enabled).get("/x").status_code == 200


def test_the_loader_hook_names_rule_and_handler(ory: HTTPServer, tmp_path: Path) -> None:
    rules = tmp_path / "rules.json"
    rules.write_text(
        '[{"id": "typo", "match": {"methods": ["GET"], "url": "http://localhost/<.*>"},'
        ' "authenticators": [{"handler": "anonymus"}], "authorizer": {"handler": "allow"},'
        ' "mutators": [{"handler": "noop"}]},'
        ' {"id": "off", "match": {"methods": ["GET"], "url": "http://localhost/off"},'
        ' "authenticators": [{"handler": "noop"}], "authorizer": {"handler": "allow"},'
        ' "mutators": [{"handler": "noop"}]}]'
    )
    config = write_config(
        tmp_path / "ory.toml",
        f"""
[ory]
sdk_url = "{ory.url_for("/")}"
[access_rules]
repositories = ["{rules}"]
[authenticators.anonymous]
enabled = true
[authorizers.allow]
enabled = true
[mutators.noop]
enabled = true
""",
    )
    settings = load_settings(config, env={})
    rule_set = load_rule_set(
        settings, validate=registry(services(ory.url_for("/"), settings)).validate
    )
    reasons = {rule.id: rule.invalid for rule in rule_set.invalid}
    assert "rule 'typo': authenticator 'anonymus': unknown handler" in reasons["typo"]
    assert (
        "rule 'off': authenticator 'noop': not enabled ([authenticators.noop] enabled = true)"
        in reasons["off"]
    )


def test_an_invalid_rule_fails_closed_instead_of_falling_through(ory: HTTPServer) -> None:
    broad = access_rule("broad", "http://localhost/<.*>", "anonymous")
    broken = access_rule(
        "broken", "http://localhost/admin/<.*>", "anonymous", config={"subjekt": "x"}
    )
    web = app(ory, broad, broken)
    assert web.get("/other").status_code == 200
    answer = web.get("/admin/x")
    assert answer.status_code == 500
    assert answer.headers["X-Rule"] == "broken"
    assert b"Traceback" not in answer.get_data()


def test_rule_config_is_merged_key_by_key_over_the_global(ory: HTTPServer) -> None:
    settings = load_settings(
        env={},
        overrides={
            "authenticators": {"anonymous": {"enabled": True, "config": {"subject": "guest"}}}
        },
    )
    assert settings.authenticators["anonymous"] == HandlerSettings(True, {"subject": "guest"})
    plain = access_rule("plain", "http://localhost/a", "anonymous")
    own = access_rule("own", "http://localhost/b", "anonymous", config={"subject": "visitor"})
    web = app(
        ory,
        plain,
        own,
        authenticators={"anonymous": {"enabled": True, "config": {"subject": "guest"}}},
    )
    assert web.get("/a").json["subject"] == "guest"  # type: ignore[index]
    assert web.get("/b").json["subject"] == "visitor"  # type: ignore[index]


def test_a_claimed_method_is_judged_by_the_stricter_rule(ory: HTTPServer) -> None:
    read = access_rule("read", "http://localhost/doc", "anonymous", methods=("GET",))
    write = access_rule("write", "http://localhost/doc", "cookie_session", methods=("POST",))
    web = app(ory, read, write)
    assert web.get("/doc").status_code == 200
    for header, value in [
        ("X-HTTP-Method-Override", "post"),
        ("X-HTTP-Method", "POST"),
        ("X-Method-Override", "PUT, POST"),
    ]:
        answer = web.get("/doc", headers={header: value})
        assert answer.status_code == 401, header
        assert answer.headers["X-Rule"] == "write"


@pytest.mark.parametrize("path", ["/admin%3F/x", "/admin%3Fq"])
def test_any_reading_that_needs_a_credential_governs(ory: HTTPServer, path: str) -> None:
    # Some routers decode the path and cut it at the `?` it spelled: they serve /admin.
    open_rule = access_rule("open", "http://localhost/<.*>", "anonymous")
    admin = access_rule("admin", "http://localhost/admin", "cookie_session")
    answer = app(ory, open_rule, admin).get(path)
    assert answer.status_code == 401
    assert answer.headers["X-Rule"] == "admin"


@pytest.mark.parametrize(
    "path", ["/admin%2Fx", "/admin%5cx", "/x/..%2Fadmin", "/admin%00", "/admin%23x"]
)
def test_suspicious_spellings_near_a_credential_rule_are_400(ory: HTTPServer, path: str) -> None:
    open_rule = access_rule("open", "http://localhost/<.*>", "anonymous")
    admin = access_rule("admin", "http://localhost/admin<.*>", "cookie_session")
    web = app(ory, open_rule, admin)
    assert web.get(path).status_code == 400
    assert web.get(path.replace("admin", "public")).status_code == 200


def test_rules_not_loaded_yet_is_503(ory: HTTPServer) -> None:
    svc = services(ory.url_for("/"))
    web = client(Pipeline(registry(svc), lambda: None))
    answer = web.get("/x")
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "5"


def test_a_new_rule_set_is_prepared_once_and_swapped_in(ory: HTTPServer) -> None:
    svc = services(ory.url_for("/"))
    current = [Matcher(RuleSet((access_rule("a", "http://localhost/<.*>", "anonymous"),)))]
    pipeline = Pipeline(registry(svc), lambda: current[0], trusted=True)
    web = client(pipeline)
    assert web.get("/x").status_code == 200
    first = pipeline.loaded()
    assert web.get("/x").status_code == 200
    assert pipeline.loaded() is first
    current[0] = Matcher(
        RuleSet((access_rule("a", "http://localhost/<.*>", "anonymous", authorizer="deny"),))
    )
    assert web.get("/x").status_code == 403


def test_the_rules_error_handlers_answer_first(ory: HTTPServer) -> None:
    ory.expect_request("/sessions/whoami").respond_with_json(kratos_session(active=False))
    svc = services(ory.url_for("/"))
    rule = access_rule("r", "http://localhost/<.*>", "cookie_session", errors=("ory_proxy",))
    matcher = Matcher(RuleSet((rule,)))
    web = client(Pipeline(registry(svc, {"ory_proxy": ProxyErrors}), lambda: matcher, trusted=True))
    answer = web.get("/x?y=1", headers={"Cookie": COOKIE, "Accept": "text/html"})
    assert answer.status_code == 303
    assert answer.headers["X-Handler"] == "ory_proxy"
    assert answer.headers["Location"].endswith(
        "?return_to=https%3A%2F%2Fapp.example.com%2Fx%3Fy%3D1"
    )
    assert web.get("/x", headers={"Cookie": COOKIE}).status_code == 401


def test_handler_tables_in_ory_toml(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "ory.toml",
        """
[authenticators.cookie_session]
enabled = true
config = { required_aal = "aal2" }
[authorizers.deny]
enabled = true
[mutators.header]
enabled = true
config = { headers = { X-User = "{{ print .Subject }}" } }
[errors]
fallback = ["json", "redirect"]
[errors.handlers.redirect]
enabled = true
config = { to = "https://app.example.com/login" }
""",
    )
    settings = load_settings(config, env={})
    assert settings.authenticators["cookie_session"] == HandlerSettings(
        True, {"required_aal": "aal2"}
    )
    assert settings.authorizers["deny"].enabled
    assert settings.mutators["header"].config == {"headers": {"X-User": "{{ print .Subject }}"}}
    assert settings.errors.fallback == ("json", "redirect")
    assert settings.errors.handlers["redirect"].config == {"to": "https://app.example.com/login"}
    assert load_settings(env={}).errors.fallback == ("json",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[authenticators.anonymous]\nenabeld = true",
            "unknown key enabeld (did you mean enabled?)",
        ),
        ('[authenticators.anonymous]\nenabled = "yes"', "enabled: expected true or false"),
        ("[mutators.header]\nconfig = 3", "config must be a table"),
        ("[errors]\nfallbak = []", "unknown key [errors] fallbak (did you mean fallback?)"),
        ('[errors]\nfallback = "json"', "fallback: expected a list of names"),
        ("authorizers = 1", "[authorizers] must be a table"),
    ],
)
def test_handler_tables_refuse_mistakes_in_one_line(
    tmp_path: Path, text: str, message: str
) -> None:
    config = write_config(tmp_path / "ory.toml", text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(config, env={})
