"""`ory-wsgi rules explain`: the real pipeline's decision for one request, step by step.

The command runs as a subprocess (the installed entry point), against rule
files in a temporary directory; Keto and Ory are the `ory_wsgi.testing`
stand-ins on loopback when the command is told to ask them.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
from test_cli import CLI
from test_rules_loader import doc_blocks

from ory_wsgi.testing import FakeKratos
from ory_wsgi.testing.keto import FakeKeto

COOKIE = "Cookie: ory_kratos_session=x"


def doc_block(language: str) -> str:
    (block,) = doc_blocks(language)
    return block


def setup(tmp_path: Path, rules: list[Any] | None = None, extra: str = "") -> Path:
    """The docs' ory.toml, rule file and session in `tmp_path`; `rules` replaces the rules."""
    config = tmp_path / "ory.toml"
    config.write_text(doc_block("toml explain") + extra)
    rules_text = doc_block("json explain") if rules is None else json.dumps(rules)
    (tmp_path / "rules.json").write_text(rules_text)
    (tmp_path / "session.json").write_text(doc_block("json explain-session"))
    return config


def explain(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The command, run in the config's directory (`--session session.json` is there)."""
    return subprocess.run(
        [*CLI, "rules", "explain", *args, "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=config.parent,
    )


def rule(rule_id: str, path: str, **handlers: Any) -> dict[str, Any]:
    return {
        "id": rule_id,
        "match": {"url": f"https://app.example.com{path}", "methods": ["GET"]},
        "authenticators": [{"handler": "cookie_session"}],
        "authorizer": {"handler": "allow"},
        "mutators": [{"handler": "noop"}],
        **handlers,
    }


def keto_rule(keto_url: str) -> dict[str, Any]:
    config = {
        "url": keto_url,
        "namespace": "areas",
        "object": "{{ index .MatchContext.RegexpCaptureGroups 0 }}",
        "relation": "access",
        "subject_id": "{{ .Subject }}",
    }
    return rule(
        "admin", "/admin/<[a-z]+>", authorizer={"handler": "ory_permissions", "config": config}
    )


def test_the_example_in_docs_rules_md(tmp_path: Path) -> None:
    setup(tmp_path)
    command, *expected = doc_block("text explain").splitlines(keepends=True)
    args = shlex.split(command.removeprefix("$ "))
    assert args[:3] == ["ory-wsgi", "rules", "explain"]
    answer = subprocess.run(
        [*CLI, *args[1:]], capture_output=True, text=True, timeout=30, cwd=tmp_path
    )
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.replace(str(tmp_path), "/etc/ory") == "".join(expected)


def test_the_browser_without_a_cookie_in_docs_rules_md_is_sent_to_login(tmp_path: Path) -> None:
    answer = explain(
        setup(tmp_path), "GET", "https://app.example.com/admin/reports", "-H", "Accept: text/html"
    )
    assert answer.returncode == 1
    lines = answer.stdout.splitlines()
    assert "  authenticator  cookie_session: not responsible (no session cookie)" in lines
    assert lines[-2:] == [
        "decision: deny, 401 unauthorized",
        "  answered by error handler redirect: 302, Location: https://app.example.com/login",
    ]
    # An API client is answered by the rule's json handler instead.
    api = explain(setup(tmp_path), "GET", "https://app.example.com/admin/reports")
    assert api.returncode == 1
    assert api.stdout.splitlines()[-1] == (
        "  answered by error handler json: 401, WWW-Authenticate: Bearer"
    )


def test_the_keto_check_is_shown_not_sent_unless_call(tmp_path: Path, fake_keto: FakeKeto) -> None:
    config = setup(tmp_path, [keto_rule(fake_keto.url)])
    args = ("GET", "https://app.example.com/admin/reports", "-H", COOKIE, "--session", "-")
    session = doc_block("json explain-session")

    def run(*more: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, "rules", "explain", *args, *more, "-c", str(config)],
            input=session,
            capture_output=True,
            text=True,
            timeout=30,
        )

    dry = run()
    assert dry.returncode == 0, dry.stderr
    assert f"would send POST {fake_keto.url}/relation-tuples/check/openapi" in dry.stdout
    body = '{"namespace":"areas","object":"reports","relation":"access","subject_id":"ada"}'
    assert body in dry.stdout
    assert fake_keto.check_calls == 0  # shown, not sent

    denied = run("--call")
    assert denied.returncode == 1
    assert "  authorizer     ory_permissions: denies: 403 forbidden" in denied.stdout
    assert "would send" not in denied.stdout
    assert "decision: deny, 403 forbidden" in denied.stdout
    assert fake_keto.check_calls == 1

    fake_keto.add("areas", "reports", "access", subject_id="ada")
    allowed = run("--call")
    assert allowed.returncode == 0
    assert "  authorizer     ory_permissions: allows" in allowed.stdout.splitlines()
    assert "decision: allow, forwarded to [proxy] upstream" in allowed.stdout
    assert fake_keto.check_calls == 2


def test_remote_json_shows_the_rendered_payload(tmp_path: Path) -> None:
    authorizer = {
        "handler": "remote_json",
        "config": {
            "remote": "https://authz.internal/check",
            "payload": '{"sub": "{{ .Subject }}", "path": "{{ .MatchContext.URL.Path }}"}',
            "headers": {"X-Api-Key": "k1"},
        },
    }
    config = setup(
        tmp_path,
        [rule("api", "/api/<.*>", authorizer=authorizer)],
        "[authorizers.remote_json]\nenabled = true\n",
    )
    answer = explain(
        config, "GET", "https://app.example.com/api/x", "-H", COOKIE, "--session", "session.json"
    )
    assert answer.returncode == 0, answer.stderr + answer.stdout
    lines = answer.stdout.splitlines()
    assert "  authorizer     remote_json: would send POST https://authz.internal/check" in lines
    assert any(line.strip() == "X-Api-Key: k1" for line in lines)
    assert any(line.strip() == '{"sub": "ada", "path": "/api/x"}' for line in lines)


def test_mutators_show_headers_cookies_and_id_token_claims(tmp_path: Path) -> None:
    mutators = [
        {
            "handler": "id_token",
            "config": {
                "claims": '{"aud": ["admin"], "email": "{{ print .Extra.identity.traits.email }}"}'
            },
        },
        {"handler": "cookie", "config": {"cookies": {"user": "{{ print .Subject }}"}}},
    ]
    extra = "[mutators.id_token]\nenabled = true\n[mutators.cookie]\nenabled = true\n"
    config = setup(tmp_path, [rule("me", "/me", mutators=mutators)], extra)
    answer = explain(
        config, "GET", "https://app.example.com/me", "-H", COOKIE, "--session", "session.json"
    )
    assert answer.returncode == 0, answer.stderr + answer.stdout
    token = next(line for line in answer.stdout.splitlines() if "id_token: header" in line)
    assert "Authorization: Bearer <id_token, ttl " in token
    claims = json.loads(token.split("> ", 1)[1])
    assert (claims["sub"], claims["aud"], claims["email"]) == ("ada", ["admin"], "ada@example.com")
    assert claims["session"]["id"] == "s-1" and "exp" not in claims
    assert "  mutator        cookie: header Cookie: user=ada" in answer.stdout


def test_claims_refusal_exits_1(tmp_path: Path) -> None:
    authorizer = {
        "handler": "claims",
        "config": {"require": {"identity.traits.email": ["root@example.com"]}},
    }
    config = setup(
        tmp_path,
        [rule("root", "/root", authorizer=authorizer)],
        "[authorizers.claims]\nenabled = true\n",
    )
    answer = explain(
        config, "GET", "https://app.example.com/root", "-H", COOKIE, "--session", "session.json"
    )
    assert answer.returncode == 1
    assert "  authorizer     claims: denies: 403 forbidden" in answer.stdout
    assert answer.stdout.splitlines()[-2].startswith("decision: deny, 403 forbidden")


def test_ory_flag_asks_that_ory(tmp_path: Path, fake_ory: FakeKratos) -> None:
    identity = fake_ory.add_identity("bob@example.com", "correct horse battery")
    _session, token = fake_ory.create_session(identity["id"])
    config = setup(tmp_path, [rule("me", "/me")])
    args = ("GET", "https://app.example.com/me", "--ory", fake_ory.url)
    found = explain(config, *args, "-H", f"X-Session-Token: {token}")
    assert found.returncode == 1  # cookie_session is not responsible for a token
    assert "cookie_session: not responsible" in found.stdout
    ((name, value),) = fake_ory.cookies(token).items()
    with_cookie = explain(config, *args, "-H", f"Cookie: {name}={value}")
    assert f"cookie_session: responsible, subject {identity['id']!r}" in with_cookie.stdout
    assert with_cookie.returncode == 0
    assert fake_ory.whoami_calls == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("-H", "NoColon"), "-H 'NoColon': expected 'Name: value'"),
        (("-H", COOKIE), "give --session FILE"),
        (("-H", COOKIE, "--session", "ory.toml"), "--session: expected the JSON object"),
        (("-H", COOKIE, "--session", "missing.json"), "--session missing.json: No such file"),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    setup(tmp_path)
    answer = subprocess.run(
        [
            *CLI,
            "rules",
            "explain",
            "GET",
            "https://app.example.com/admin/x",
            *args,
            "-c",
            "ory.toml",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert (answer.returncode, answer.stdout) == (2, "")
    assert answer.stderr.startswith("ory-wsgi: ") and message in answer.stderr
    assert answer.stderr.count("\n") == 1


def test_an_invalid_rule_exits_2_naming_it(tmp_path: Path) -> None:
    config = setup(tmp_path, [rule("off", "/off", authorizer={"handler": "deny"})])
    answer = explain(config, "GET", "https://app.example.com/off")
    assert answer.returncode == 2
    assert answer.stdout.splitlines()[-1].startswith("error: the rule is invalid")
    assert "authorizer 'deny': not enabled" in answer.stdout


def test_protect_shorthand_is_explained_too(tmp_path: Path) -> None:
    config = tmp_path / "ory.toml"
    config.write_text(
        '[proxy]\nupstream = "http://127.0.0.1:3000"\npublic_url = "https://app.example.com"\n'
        '[ory]\nsdk_url = "http://127.0.0.1:4433"\n[[protect]]\nprefix = "/members"\n'
    )
    browser = explain(config, "GET", "https://app.example.com/MEMBERS/x", "-H", "Accept: text/html")
    assert browser.returncode == 1
    lines = browser.stdout.splitlines()
    assert lines[1:3] == [
        "rules: [[protect]] / [[public]] (no access rules are configured)",
        "rule: protect-1",
    ]
    assert lines[-1].startswith(
        "  answered by error handler ory_proxy: 303, Location: "
        "https://app.example.com/.ory/self-service/login/browser?return_to="
    )
    open_path = explain(config, "GET", "https://app.example.com/")
    assert open_path.returncode == 0
    assert "rule: public" in open_path.stdout.splitlines()
