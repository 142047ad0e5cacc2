"""Loading access rules: Oathkeeper rule files, `[[rule]]` tables, repositories, errors.

Real files in a temporary directory, read through the settings as `ory-wsgi`
reads them. The rule files are in the shape of Oathkeeper's own examples
(.docker_compose/rules.json, test/stub/rules.yaml) and must load unchanged.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from ory_wsgi.errors import ConfigError
from ory_wsgi.rules.loader import RuleError, load_rule_set
from ory_wsgi.rules.matcher import Matcher
from ory_wsgi.rules.model import AccessRule, Handler, RuleSet
from ory_wsgi.settings import load_settings

OATHKEEPER_JSON = """\
[
  {
    "id": "allow-anonymous-with-header-mutator",
    "upstream": {"url": "https://httpbin.org/anything/header"},
    "match": {
      "url": "http://<127.0.0.1|localhost>:4455/anything/header",
      "methods": ["GET"]
    },
    "authenticators": [{"handler": "anonymous"}],
    "authorizer": {"handler": "allow"},
    "mutators": [
      {"handler": "header", "config": {"headers": {"X-User": "{{ print .Subject }}"}}}
    ]
  },
  {
    "id": "deny-anonymous",
    "upstream": {"url": "https://httpbin.org/anything/deny"},
    "match": {"url": "http://<127.0.0.1|localhost>:4455/anything/deny", "methods": ["GET"]},
    "authenticators": [{"handler": "anonymous"}],
    "authorizer": {"handler": "deny"},
    "mutators": [{"handler": "noop"}],
    "errors": [
      {"handler": "json",
       "config": {"when": [{"request": {"header": {"accept": ["application/json"]}}}]}},
      {"handler": "redirect",
       "config": {"when": [{"request": {"header": {"accept": ["text/*"]}}}]}}
    ]
  },
  {
    "id": "allow-anonymous-with-id-token-mutator",
    "version": "v0.40.6",
    "description": "Anyone, with an ID token",
    "upstream": {"url": "http://127.0.0.1:6662", "preserve_host": true, "strip_path": "/api"},
    "match": {"url": "http://127.0.0.1:6060/<.*>", "methods": ["GET", "POST"]},
    "authenticators": [{"handler": "cookie_session"}, {"handler": "anonymous"}],
    "authorizer": {"handler": "allow"},
    "mutators": [{"handler": "id_token", "config": {"claims": "{\\"aud\\": [\\"api\\"]}"}}]
  }
]
"""

OATHKEEPER_YAML = """\
- id: test-rule-1-yaml
  upstream:
    preserve_host: true
    strip_path: /api
    url: https://mybackend.com/api
  match:
    url: https://myproxy.com/api/<.*>
    methods:
      - GET
      - POST
  authenticators:
    - handler: noop
    - handler: anonymous
  authorizer:
    handler: allow
  mutators:
    - handler: noop
"""


def write_config(tmp_path: Path, body: str) -> Path:
    config = tmp_path / "ory.toml"
    config.write_text('[proxy]\nupstream = "http://127.0.0.1:3000"\n' + body)
    return config


def load(tmp_path: Path, body: str, **files: str) -> RuleSet:
    for name, text in files.items():
        (tmp_path / name.replace("__", ".")).write_text(text)
    return load_rule_set(load_settings(write_config(tmp_path, body), env={}))


def test_oathkeeper_json_and_yaml_files_load_unchanged(tmp_path: Path) -> None:
    rule_set = load(
        tmp_path,
        '[access_rules]\nrepositories = ["rules.json", "file://rules.yaml"]\n',
        rules__json=OATHKEEPER_JSON,
        rules__yaml=OATHKEEPER_YAML,
    )
    assert [r.id for r in rule_set.rules] == [
        "allow-anonymous-with-header-mutator",
        "deny-anonymous",
        "allow-anonymous-with-id-token-mutator",
        "test-rule-1-yaml",
    ]
    assert rule_set.invalid == ()
    assert rule_set.sources == (str(tmp_path / "rules.json"), str(tmp_path / "rules.yaml"))
    header = rule_set.rules[0]
    assert header.source == str(tmp_path / "rules.json")
    assert header.mutators == (Handler("header", {"headers": {"X-User": "{{ print .Subject }}"}}),)
    assert header.upstream.url == "https://httpbin.org/anything/header"
    assert header.upstream.preserve_host is False  # Oathkeeper's default
    deny = rule_set.rules[1]
    assert [e.handler for e in deny.errors] == ["json", "redirect"]
    assert deny.errors[0].config["when"][0]["request"]["header"]["accept"] == ["application/json"]
    token = rule_set.rules[2]
    assert (token.version, token.description) == ("v0.40.6", "Anyone, with an ID token")
    assert (token.upstream.preserve_host, token.upstream.strip_path) == (True, "/api")
    assert token.match is not None and token.match.methods == ("GET", "POST")
    yaml_rule = rule_set.rules[3]
    assert [a.handler for a in yaml_rule.authenticators] == ["noop", "anonymous"]
    assert yaml_rule.authorizer == Handler("allow", {})

    matcher = Matcher(rule_set)
    for host in ("127.0.0.1:4455", "localhost:4455"):
        result = matcher.match("GET", "http", host, "/anything/deny")
        assert result is not None and result.rule.id == "deny-anonymous"
    result = matcher.match("POST", "http", "127.0.0.1:6060", "/any/thing")
    assert result is not None and result.rule.id == "allow-anonymous-with-id-token-mutator"
    assert result.capture_groups == ("any/thing",)


def test_rule_tables_in_ory_toml_have_the_same_fields(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("")
    rule_set = load(
        tmp_path,
        """
[access_rules]
matching_strategy = "glob"
default_rule = "everything-else"

[[rule]]
id = "api"
priority = 3
match = { methods = ["get", "post"], url = "https://app.example.com/api/<**>" }
authenticators = [{ handler = "cookie_session" }, { handler = "bearer_token" }]
authorizer = { handler = "allow" }
mutators = [{ handler = "id_token", config = { ttl = "30s" } }]
upstream = { url = "https://api.internal:8443", ca_file = "ca.pem", server_name = "api" }

[[rule]]
id = "everything-else"
authenticators = [{ handler = "anonymous" }]
authorizer = { handler = "deny" }
mutators = [{ handler = "noop" }]
errors = [{ handler = "json" }]
""",
    )
    assert (rule_set.strategy, rule_set.default_rule) == ("glob", "everything-else")
    api, fallback = rule_set.rules
    assert api.priority == 3
    assert api.match is not None and api.match.methods == ("GET", "POST")
    assert api.mutators[0].config == {"ttl": "30s"}
    assert api.upstream.ca_file == str(tmp_path / "ca.pem")  # relative to ory.toml
    assert api.upstream.server_name == "api"
    assert api.source == f"{tmp_path / 'ory.toml'} [[rule]]"
    assert fallback.match is None
    matcher = Matcher(rule_set)
    assert matcher.match("GET", "https", "app.example.com", "/api/a/b").rule.id == "api"  # type: ignore[union-attr]
    assert matcher.match("GET", "https", "app.example.com", "/").rule.id == "everything-else"  # type: ignore[union-attr]


def test_inline_and_absolute_file_repositories(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "more.yml").write_text(OATHKEEPER_YAML)
    inline = base64.b64encode(OATHKEEPER_JSON.encode()).decode()
    rule_set = load(
        tmp_path,
        f'[access_rules]\nrepositories = ["inline://{inline}", "file://{elsewhere}/more.yml"]\n',
    )
    assert len(rule_set.rules) == 4
    assert rule_set.rules[0].source.startswith("inline://")
    assert rule_set.rules[3].source == str(elsewhere / "more.yml")


def test_repositories_from_the_environment_are_relative_to_the_working_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "rules.yaml").write_text(OATHKEEPER_YAML)
    monkeypatch.chdir(tmp_path)
    settings = load_settings(
        None,
        env={
            "ORY_WSGI_PROXY_UPSTREAM": "http://127.0.0.1:3000",
            "ORY_WSGI_ACCESS_RULES_REPOSITORIES": "rules.yaml",
        },
    )
    assert settings.access_rules.repositories == (str(tmp_path / "rules.yaml"),)
    assert [r.id for r in load_rule_set(settings).rules] == ["test-rule-1-yaml"]


def test_http_repositories_are_fetched_at_load(tmp_path: Path, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/rules.json").respond_with_data(OATHKEEPER_JSON)
    httpserver.expect_request("/gone.json").respond_with_data("no", status=404)
    url = httpserver.url_for("/rules.json")
    rule_set = load(tmp_path, f'[access_rules]\nrepositories = ["{url}"]\n')
    assert len(rule_set.rules) == 3 and rule_set.rules[0].source == url
    gone = httpserver.url_for("/gone.json")
    with pytest.raises(RuleError, match=f"^{gone}: expected 200, got 404$"):
        load(tmp_path, f'[access_rules]\nrepositories = ["{gone}"]\n')


def good(rule_id: str = "r", **fields: Any) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "id": rule_id,
        "match": {"url": "https://x/<.*>", "methods": ["GET"]},
        "authenticators": [{"handler": "anonymous"}],
        "authorizer": {"handler": "allow"},
        "mutators": [{"handler": "noop"}],
    }
    rule.update(fields)
    return {key: value for key, value in rule.items() if value is not None}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("{not json: [", r"rules.yaml: neither JSON nor valid YAML: "),
        (json.dumps({"id": "x"}), r"rules.yaml: expected a list of rules, got an object"),
        (json.dumps(["x"]), r"rules.yaml: rule #1: expected an object, got a string"),
        (
            json.dumps([good(), good(id=None)]),
            r"rules.yaml: rule #2: id: must be a non-empty string",
        ),
        (
            json.dumps([good(authenticator=[])]),
            r"rule 'r': unknown field authenticator \(did you mean authenticators\?\)",
        ),
        (
            json.dumps([good(match={"url": "https://x/", "method": ["GET"]})]),
            r"rule 'r': unknown field match.method \(did you mean match.methods\?\)",
        ),
        (
            json.dumps([good(match={"authority": "a", "full_method": "b"})]),
            r"rule 'r': match: gRPC rules .* are not supported",
        ),
        (
            json.dumps([good(match={"methods": ["GET"]})]),
            r"rule 'r': match.url: must be a non-empty string",
        ),
        (
            json.dumps([good(match={"url": "https://x/", "methods": "GET"})]),
            r"rule 'r': match.methods: expected a list of strings",
        ),
        (
            json.dumps([good(match={"url": "https://x/", "methods": ["GE T"]})]),
            r"rule 'r': match.methods: not an HTTP method: 'GE T'",
        ),
        (
            json.dumps([good(match={"url": "https://x/<[a-z>", "methods": ["GET"]})]),
            r"rule 'r': match.url: pattern #2 <\[a-z> is not a valid regex",
        ),
        (
            json.dumps([good(match={"url": "https://x/<a", "methods": ["GET"]})]),
            r"rule 'r': match.url: unbalanced '<'",
        ),
        (
            json.dumps([good(authenticators={"handler": "anonymous"})]),
            r"rule 'r': authenticators: expected a list, got an object",
        ),
        (
            json.dumps([good(authorizer={"handler": "allow", "config": [1]})]),
            r"rule 'r': authorizer.config: expected an object, got a list",
        ),
        (
            json.dumps([good(mutators=[{"handler": "noop", "configs": {}}])]),
            r"rule 'r': unknown field mutators\[0\].configs"
            r" \(did you mean mutators\[0\].config\?\)",
        ),
        (
            json.dumps([good(errors=[{"handler": 1}])]),
            r"rule 'r': errors\[0\].handler: expected a string, got 1",
        ),
        (
            json.dumps([good(upstream={"url": "http://u", "preserve_host": "yes"})]),
            r"rule 'r': upstream.preserve_host: expected true or false",
        ),
        (
            json.dumps([good(upstream={"url": "http://u", "strip_paths": "/a"})]),
            r"rule 'r': unknown field upstream.strip_paths \(did you mean upstream.strip_path\?\)",
        ),
        (
            json.dumps([good(priority="high")]),
            r"rule 'r': priority: expected a whole number, got 'high'",
        ),
        (
            json.dumps([good(priority=True)]),
            r"rule 'r': priority: expected a whole number, got True",
        ),
        (json.dumps([good(version=0.38)]), r"rule 'r': version: expected a string, got 0.38"),
        (
            json.dumps([good(match=None)]),
            r"rule 'r': match: must be set \(only \[access_rules\] default_rule may omit it\)",
        ),
        (json.dumps([good("a"), good("a")]), r"rule 'a': duplicate id \(also in .*rules.yaml\)"),
        (
            "- id: r\n  match: {url: https://x/, methods: [GET]}\n  upstreams: {}\n",
            r"rule 'r': unknown field upstreams \(did you mean upstream\?\)",
        ),
    ],
)
def test_each_problem_is_one_line_naming_file_and_rule(
    tmp_path: Path, document: str, message: str
) -> None:
    with pytest.raises(RuleError) as caught:
        load(tmp_path, '[access_rules]\nrepositories = ["rules.yaml"]\n', rules__yaml=document)
    text = str(caught.value)
    assert "\n" not in text
    assert text.startswith(str(tmp_path / "rules.yaml"))
    assert caught.match(message)


def test_duplicate_ids_across_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(RuleError) as caught:
        load(
            tmp_path,
            '[access_rules]\nrepositories = ["a.json", "b.json"]\n',
            a__json=json.dumps([good("shared")]),
            b__json=json.dumps([good("other"), good("shared")]),
        )
    assert str(caught.value) == (
        f"{tmp_path / 'b.json'}: rule 'shared': duplicate id (also in {tmp_path / 'a.json'})"
    )


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"authenticators": []}, "authenticators: must not be empty"),
        ({"authenticators": None}, "authenticators: must not be empty"),
        ({"authorizer": None}, "authorizer.handler: must be set"),
        ({"authorizer": {"handler": ""}}, "authorizer.handler: must be set"),
        ({"mutators": []}, "mutators: must not be empty"),
        ({"upstream": {"url": "ftp://files"}}, "upstream.url: not an http(s) URL: 'ftp://files'"),
        (
            {"upstream": {"url": "http://host:99999"}},
            "upstream.url: not a URL: 'http://host:99999'",
        ),
    ],
)
def test_rules_failing_validation_are_kept_and_fail_closed(
    tmp_path: Path, fields: dict[str, Any], problem: str
) -> None:
    rule_set = load(
        tmp_path,
        '[access_rules]\nrepositories = ["rules.json"]\n',
        rules__json=json.dumps([good("ok"), good("broken", **fields)]),
    )
    broken = rule_set.get("broken")
    assert broken is not None and rule_set.invalid == (broken,)
    assert broken.invalid == f"{tmp_path / 'rules.json'}: rule 'broken': {problem}"
    # it still matches, so its requests fail closed instead of reaching a broader rule
    assert broken.match is not None
    result = Matcher(rule_set).match("GET", "https", "x", "/a")
    assert result is not None and result.rule.id == "ok"  # same rank: ok was loaded first


def test_the_pipeline_can_add_its_own_validation(tmp_path: Path) -> None:
    (tmp_path / "rules.json").write_text(
        json.dumps([good("a"), good("b", authorizer={"handler": "allow_all"})])
    )
    settings = load_settings(
        write_config(tmp_path, '[access_rules]\nrepositories = ["rules.json"]\n'), env={}
    )
    known = {"allow", "deny"}

    def validate(rule: AccessRule) -> str:
        assert rule.authorizer is not None
        name = rule.authorizer.handler
        return "" if name in known else f"authorizer.handler: unknown handler {name!r}"

    rule_set = load_rule_set(settings, validate=validate)
    assert [r.invalid for r in rule_set.rules] == [
        "",
        f"{tmp_path / 'rules.json'}: rule 'b': authorizer.handler: unknown handler 'allow_all'",
    ]


def test_an_empty_rule_file_has_no_rules(tmp_path: Path) -> None:
    rule_set = load(tmp_path, '[access_rules]\nrepositories = ["rules.yaml"]\n', rules__yaml="")
    assert rule_set.rules == ()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "[access_rules]\nrepository = []\n",
            r"unknown key \[access_rules\] repository \(did you mean repositories\?\)",
        ),
        (
            '[access_rules]\nmatching_strategy = "globs"\n',
            r"\[access_rules\] matching_strategy: must be regexp or glob, got 'globs'"
            r" \(did you mean glob\?\)",
        ),
        (
            '[access_rules]\nrepositories = ["s3://bucket/rules.json"]\n',
            r"\[access_rules\] repositories: s3://bucket/rules.json: repositories can be",
        ),
        (
            '[access_rules]\nrepositories = "rules.json"\n',
            r"\[access_rules\] repositories: expected a list of strings",
        ),
        ("[[rules]]\nid = 'x'\n", r"unknown section \[rules\] \(did you mean rule\?\)"),
        ("[rule]\nid = 'x'\n", r"\[\[rule\]\] must be an array of tables"),
        (
            "[[rule]]\nid = 'x'\nmatch = { url = 'https://x/' }\nauthorizers = {}\n",
            r"ory.toml \[\[rule\]\]: rule 'x': unknown field authorizers"
            r" \(did you mean authorizer\?\)",
        ),
    ],
)
def test_settings_refuse_bad_access_rule_keys(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(write_config(tmp_path, body), env={})


def test_a_missing_rule_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(RuleError, match=f"^{tmp_path / 'nope.json'}: no such file$"):
        load(tmp_path, '[access_rules]\nrepositories = ["nope.json"]\n')


def test_bad_inline_repository(tmp_path: Path) -> None:
    with pytest.raises(RuleError, match=r"inline://\*\*\*: inline:// must be followed by base64"):
        load(tmp_path, '[access_rules]\nrepositories = ["inline://***"]\n')


def doc_blocks(language: str, doc: str = "rules.md") -> list[str]:
    """The fenced code blocks of docs/<doc> in one language ("" for plain blocks)."""
    text = (Path(__file__).parent.parent / "docs" / doc).read_text()
    blocks: list[str] = []
    fence: str | None = None  # the info string of the open block
    lines: list[str] = []
    for line in text.splitlines(keepends=True):
        if line.startswith("```"):
            if fence is None:
                fence, lines = line[3:].strip(), []
            else:
                if fence == language:
                    blocks.append("".join(lines))
                fence = None
        elif fence is not None:
            lines.append(line)
    return blocks


def test_the_rule_files_in_docs_rules_md_load(tmp_path: Path) -> None:
    documents = [b for b in doc_blocks("json") if b.startswith("[")]
    documents += [b for b in doc_blocks("yaml") if b.startswith("- id:")]
    assert len(documents) == 2
    for index, document in enumerate(documents):
        (tmp_path / f"doc{index}").write_text(document)
    rule_set = load(tmp_path, '[access_rules]\nrepositories = ["doc0", "doc1"]\n')
    assert [r.id for r in rule_set.rules] == [
        "allow-anonymous-with-header-mutator",
        "deny-anonymous",
        "members",
    ]
    assert rule_set.invalid == ()


def test_the_toml_in_docs_rules_md_loads(tmp_path: Path) -> None:
    tables = [b for b in doc_blocks("toml") if "[[rule]]" in b]
    assert len(tables) == 2
    default = tables[1].replace("[access_rules]\n", "")  # both blocks share one section
    rule_set = load(tmp_path, "[access_rules]\n" + default + tables[0])
    assert [r.id for r in rule_set.rules] == ["everything-else", "api"]
    assert rule_set.default_rule == "everything-else" and rule_set.invalid == ()


def test_the_which_rule_wins_example_in_docs_rules_md(tmp_path: Path) -> None:
    block = next(b for b in doc_blocks("") if b.startswith("catch-all"))
    rules = []
    for line in block.splitlines():
        rule_id, url, *rest = line.split()
        priority = int(rest[1]) if rest else 0
        rules.append(good(rule_id, match={"url": url, "methods": ["GET"]}, priority=priority))
    (tmp_path / "rules.json").write_text(json.dumps(rules))
    matcher = Matcher(load(tmp_path, '[access_rules]\nrepositories = ["rules.json"]\n'))
    expected = {
        "/api/things": "api",
        "/api/users/1": "api-users",
        "/api/users/1/edit": "user-edit",
        "/health": "health",
        "/": "catch-all",
    }
    for path, rule_id in expected.items():
        result = matcher.match("GET", "https", "app.example.com", path)
        assert result is not None and result.rule.id == rule_id, path


def test_handler_config_is_json_data(tmp_path: Path) -> None:
    """YAML and TOML dates become strings, as Oathkeeper's YAML-to-JSON step makes them."""
    yaml_rule = OATHKEEPER_YAML.replace(
        "    - handler: noop\n",
        "    - handler: noop\n      config: {since: 2024-01-02, 7: [true, 1.5, null]}\n",
    )
    rule_set = load(
        tmp_path,
        '[access_rules]\nrepositories = ["rules.yaml"]\n'
        "[[rule]]\nid = 't'\nmatch = { methods = ['GET'], url = 'https://x/' }\n"
        "authenticators = [{ handler = 'anonymous' }]\nauthorizer = { handler = 'allow' }\n"
        "mutators = [{ handler = 'noop', config = { at = 1979-05-27T07:32:00Z } }]\n",
        rules__yaml=yaml_rule,
    )
    toml_rule, yaml_loaded = rule_set.rules
    assert toml_rule.mutators[0].config == {"at": "1979-05-27T07:32:00+00:00"}
    assert yaml_loaded.authenticators[0].config == {"since": "2024-01-02", "7": [True, 1.5, None]}
    json.dumps([dict(h.config) for h in (*toml_rule.mutators, *yaml_loaded.authenticators)])


def test_binary_yaml_is_not_config(tmp_path: Path) -> None:
    document = OATHKEEPER_YAML.replace(
        "    - handler: noop\n", "    - handler: noop\n      config: {key: !!binary aGk=}\n"
    )
    with pytest.raises(RuleError, match=r"authenticators\[0\].config.key: not JSON data: bytes"):
        load(tmp_path, '[access_rules]\nrepositories = ["rules.yaml"]\n', rules__yaml=document)


def test_rule_tables_can_be_passed_as_overrides(tmp_path: Path) -> None:
    """`make_app("ory.toml", rule=[...])` replaces the file's [[rule]] tables."""
    config = write_config(tmp_path, "[[rule]]\nid = 'from-file'\nmatch = { url = 'https://x/' }\n")
    settings = load_settings(config, env={}, overrides={"rule": [good("passed")]})
    assert [r.id for r in settings.rule] == ["passed"]
    assert settings.rule[0].source == "overrides [[rule]]"
    with pytest.raises(ConfigError, match=r"^overrides \[\[rule\]\]: rule 'x': unknown field"):
        load_settings(config, env={}, overrides={"rule": [{**good("x"), "matcher": {}}]})


def test_a_rule_table_may_name_its_own_strategy(tmp_path: Path) -> None:
    """`match.strategy` (ours) in ory.toml and in a rule file; anything else refuses the set."""
    rules_json = json.dumps(
        [
            {
                "id": "files",
                "match": {
                    "methods": ["GET"],
                    "url": "https://app.example.com/files/<**>",
                    "strategy": "glob",
                },
                "authenticators": [{"handler": "anonymous"}],
                "authorizer": {"handler": "allow"},
                "mutators": [{"handler": "noop"}],
            }
        ]
    )
    rule_set = load(
        tmp_path,
        """
[access_rules]
matching_strategy = "glob"
repositories = ["rules.json"]

[[rule]]
id = "user"
match = { methods = ["GET"], url = "https://app.example.com/users/<[0-9]+>", strategy = "regexp" }
authenticators = [{ handler = "anonymous" }]
authorizer = { handler = "allow" }
mutators = [{ handler = "noop" }]
""",
        rules__json=rules_json,
    )
    user, files = rule_set.rules
    assert user.match is not None and user.match.strategy == "regexp"
    assert files.match is not None and files.match.strategy == "glob"
    matcher = Matcher(rule_set)
    found = matcher.match("GET", "https", "app.example.com", "/users/7")
    assert found is not None and found.rule.id == "user" and found.capture_groups == ("7",)
    assert matcher.match("GET", "https", "app.example.com", "/users/x") is None
    assert matcher.match("GET", "https", "app.example.com", "/files/a/b").rule.id == "files"  # type: ignore[union-attr]
    bad = rules_json.replace('"glob"', '"regex"')
    with pytest.raises(RuleError, match=r"match\.strategy: must be regexp or glob, got 'regex'"):
        load(tmp_path, '[access_rules]\nrepositories = ["rules.json"]\n', rules__json=bad)
