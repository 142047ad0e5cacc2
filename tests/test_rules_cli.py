"""`ory-wsgi rules check` and `ory-wsgi rules explain`: exit codes and the lines they print."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_cli import run_cli

from ory_wsgi.cli import main


def rule(rule_id: str, url: str, methods: tuple[str, ...] = ("GET",), **extra: Any) -> Any:
    return {
        "id": rule_id,
        "match": {"url": url, "methods": list(methods)},
        "authenticators": [{"handler": "anonymous"}],
        "authorizer": {"handler": "allow"},
        "mutators": [{"handler": "noop"}],
        **extra,
    }


def config(tmp_path: Path, rules: list[Any], extra: str = "") -> str:
    (tmp_path / "rules.json").write_text(json.dumps(rules))
    path = tmp_path / "ory.toml"
    path.write_text(
        '[proxy]\nupstream = "http://127.0.0.1:3000"\n'
        f'[access_rules]\nrepositories = ["rules.json"]\n{extra}'
        "[authenticators.anonymous]\nenabled = true\n[authorizers.allow]\nenabled = true\n"
        "[mutators.noop]\nenabled = true\n[errors.handlers.json]\nenabled = true\n"
    )
    return str(path)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


RULES = [
    rule("api", "https://app.example.com/api/<.*>", ("GET", "POST")),
    rule("users", "https://app.example.com/api/users/<[0-9]+>"),
    rule("admin", "https://app.example.com/<.*>/admin", priority=5),
]


def test_check_prints_a_summary_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "rules", "check", "-c", config(tmp_path, RULES))
    assert (code, err) == (0, "")
    assert out == "ok: 3 access rules (3 from 1 repository, 0 from [[rule]]); regexp matching\n"


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ([rule("bad", "https://x/<[a-z>")], "rule 'bad': match.url: pattern #2"),
        ([rule("a", "https://x/"), rule("a", "https://y/")], "rule 'a': duplicate id"),
        ([{**rule("t", "https://x/"), "authorizers": {}}], "rule 't': unknown field authorizers"),
        (
            [rule("empty", "https://x/", authenticators=[])],
            "rule 'empty': authenticators: must not",
        ),
    ],
)
def test_check_exits_2_with_one_line_naming_file_and_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], rules: list[Any], message: str
) -> None:
    code, out, err = run(capsys, "rules", "check", "-c", config(tmp_path, rules))
    assert code == 2 and out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"ory-wsgi: {tmp_path / 'rules.json'}: ") and message in err


def test_check_warns_about_ties_and_rules_that_match_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = [
        rule("first", "https://x/<[a-z]+>"),
        rule("second", "https://x/<[0-9a-z]+>"),
        rule("no-methods", "https://x/none", ()),
    ]
    code, out, err = run(capsys, "rules", "check", "-c", config(tmp_path, rules))
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].endswith("rule 'no-methods': match.methods is empty: it matches no request")
    assert lines[1].startswith(f"warning: {tmp_path / 'rules.json'}: rule 'second': ties with")
    assert "'first' wins" in lines[1]
    assert lines[2].startswith("ok: 3 access rules")


def test_check_reports_a_bad_setting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = config(tmp_path, RULES, 'matching_strategy = "regex"\n')
    code, _out, err = run(capsys, "rules", "check", "-c", path)
    assert code == 2
    assert "[access_rules] matching_strategy: must be regexp or glob, got 'regex'" in err


@pytest.mark.parametrize(
    ("method", "url", "code", "selected"),
    [
        ("GET", "https://app.example.com/api/users/7?x=1", 0, "rule: users; capture groups ['7']"),
        ("post", "https://APP.example.com/api/users/7", 0, "rule: api; capture groups ['users/7']"),
        ("GET", "https://app.example.com/api/x/../users/admin", 0, "rule: admin; capture groups"),
        ("GET", "https://app.example.com/other", 1, "no rule matches"),
    ],
)
def test_explain_names_the_rule_and_why_the_others_lose(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    method: str,
    url: str,
    code: int,
    selected: str,
) -> None:
    result, out, _err = run(capsys, "rules", "explain", method, url, "-c", config(tmp_path, RULES))
    assert result == code
    lines = out.splitlines()
    matched = next(i for i, line in enumerate(lines) if not line.startswith(("  ", "GET", "POST")))
    assert lines[matched].startswith(selected)
    assert len(lines[1:matched]) == len(RULES)


def test_explain_shows_each_verdict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = config(tmp_path, RULES)
    _code, out, _err = run(
        capsys, "rules", "explain", "POST", "https://app.example.com/api/users/7", "-c", path
    )
    assert out.splitlines()[0] == "POST https://app.example.com/api/users/7"
    verdicts = {line.split()[0] + " " + line.split()[1] for line in out.splitlines()[1:4]}
    assert "selected api" in verdicts
    assert any(v.startswith("no") for v in verdicts)
    assert "method POST is not one of GET" in out


def test_the_installed_command_exits_with_the_same_codes(tmp_path: Path) -> None:
    path = config(tmp_path, RULES)
    assert run_cli("rules", "check", "-c", path).returncode == 0
    found = run_cli("rules", "explain", "GET", "https://app.example.com/api/a", "-c", path)
    assert found.returncode == 0
    assert "rule: api; capture groups ['a']" in found.stdout.splitlines()
    assert run_cli("rules", "explain", "GET", "https://nope/", "-c", path).returncode == 1
    broken = config(tmp_path, [rule("x", "https://x/<")])
    failed = run_cli("rules", "check", "-c", broken)
    assert failed.returncode == 2 and "rule 'x': match.url: unbalanced" in failed.stderr


def test_explain_refuses_a_url_no_request_could_have(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config(tmp_path, RULES)
    code, out, err = run(
        capsys, "rules", "explain", "GET", "https://u@app.example.com/", "-c", path
    )
    assert (code, out) == (2, "")
    assert err == (
        "ory-wsgi: https://u@app.example.com/: the request is refused (400):"
        " not a host: 'u@app.example.com'\n"
    )
