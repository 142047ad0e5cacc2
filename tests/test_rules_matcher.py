"""The compiled access-rule matcher (ory_wsgi.rules.matcher), from tables.

Pure and I/O-free: rule sets are built from the same decoded documents a rule
file holds, then requests are matched as (method, scheme, host, path).
Oathkeeper's own matcher and engine tests are the source of the facts here.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ory_wsgi.errors import BadRequest
from ory_wsgi.rules.loader import RuleError, build_rule_set, parse_document
from ory_wsgi.rules.matcher import Matcher, PatternError, compile_url, split_template
from ory_wsgi.rules.model import Strategy


def rule(rule_id: str, url: str | None, methods: tuple[str, ...] = ("GET",), **extra: Any) -> Any:
    document: dict[str, Any] = {
        "id": rule_id,
        "authenticators": [{"handler": "anonymous"}],
        "authorizer": {"handler": "allow"},
        "mutators": [{"handler": "noop"}],
        **extra,
    }
    if url is not None:
        document["match"] = {"url": url, "methods": list(methods)}
    return document


def matcher(*rules: Any, strategy: Strategy = "regexp", default: str = "") -> Matcher:
    parsed = parse_document(list(rules), "rules.json", "/")
    return Matcher(build_rule_set([parsed], strategy, default))


def split(url: str) -> tuple[str, str, str]:
    scheme, rest = url.split("://", 1)
    host, _, path = rest.partition("/")
    return scheme, host, "/" + path


def matched(m: Matcher, method: str, url: str) -> str | None:
    result = m.match(method, *split(url))
    return None if result is None else result.rule.id


# Oathkeeper's rule/matcher_test.go rule set, regexp and glob flavours.
OATHKEEPER_REGEXP = [
    rule("foo1", "https://localhost:1234/<foo|bar>", ("POST",)),
    rule("foo2", "https://localhost:34/<baz|bar>", ("GET",)),
    rule("foo3", "https://localhost:343/<baz|bar>", ("GET",)),
]
OATHKEEPER_GLOB = [
    rule("foo1", "https://localhost:1234/<{foo*,bar*}>", ("POST",)),
    rule("foo2", "https://localhost:34/<{baz*,bar*}>", ("GET",)),
    rule("foo3", "https://localhost:343/<{baz*,bar*}>", ("GET",)),
]


@pytest.mark.parametrize(
    ("strategy", "rules"), [("regexp", OATHKEEPER_REGEXP), ("glob", OATHKEEPER_GLOB)]
)
@pytest.mark.parametrize(
    ("method", "url", "expected"),
    [
        ("GET", "https://localhost:34/baz", "foo2"),
        ("POST", "https://localhost:1234/foo", "foo1"),
        ("DELETE", "https://localhost:1234/foo", None),
        ("GET", "https://localhost:343/bar", "foo3"),
        ("GET", "https://localhost:3434/bar", None),
        ("GET", "http://localhost:34/baz", None),
        ("post", "https://localhost:1234/bar", "foo1"),  # methods compare ignoring case
    ],
)
def test_oathkeeper_matcher_cases(
    strategy: Strategy, rules: list[Any], method: str, url: str, expected: str | None
) -> None:
    assert matched(matcher(*rules, strategy=strategy), method, url) == expected


@pytest.mark.parametrize(
    ("pattern", "url", "expected"),
    [
        # regexp parts are grouped: an alternation cannot escape the anchoring
        ("https://x/<foo|bar>", "https://x/foo", True),
        ("https://x/<foo|bar>", "https://x/foo/admin", False),
        ("https://x/<foo|bar>", "https://x/xbar", False),
        # literal text is literal: dots in hosts do not match any character
        ("http://127.0.0.1:6060/<.*>", "http://127.0.0.1:6060/anything/here", True),
        ("http://127.0.0.1:6060/<.*>", "http://127a0a0a1:6060/x", False),
        (
            "http://<127.0.0.1|localhost>:4455/anything/header",
            "http://localhost:4455/anything/header",
            True,
        ),
        ("http://127.0.0.1:<6660|6661>/jwt", "http://127.0.0.1:6661/jwt", True),
        ("http://127.0.0.1:<6660|6661>/jwt", "http://127.0.0.1:6662/jwt", False),
        # the whole URL must match, not a prefix of it
        ("https://x/public/<[a-z]+>", "https://x/public/abc/def", False),
        ("https://x/public/<.*>", "https://x/publicfoo", False),
        # look-arounds work (Oathkeeper uses regexp2)
        ("https://x/<(?!admin)[^/]+>/<.*>", "https://x/users/1", True),
        ("https://x/<(?!admin)[^/]+>/<.*>", "https://x/admin/1", False),
        # `.` matches a line break (a decoded %0A): unlike Go, so <.*> means anything
        ("https://x/<.*>", "https://x/a\nb", True),
        ("https://x/<[a-z.]*>", "https://x/a\nb", False),
        # flags opening a pattern apply to it, as in Go
        ("https://x/<(?i)admin>/<.*>", "https://x/ADMIN/1", True),
        ("https://x/<(?i)admin>/<[a-z]+>", "https://x/admin/B", False),
        # nested <> belong to the pattern
        ("https://x/<[a-z]{1,3}(?:<b>)?>", "https://x/ab<b>", True),
    ],
)
def test_regexp_patterns(pattern: str, url: str, expected: bool) -> None:
    assert (matched(matcher(rule("r", pattern)), "GET", url) == "r") is expected


@pytest.mark.parametrize(
    ("pattern", "url", "expected"),
    [
        # from Oathkeeper's engine_glob_test.go, as URLs
        ("https://x/foo:<?>", "https://x/foo:u", True),
        ("https://x/foo:<?>", "https://x/foo:user", False),
        ("https://x/foo:<?>", "https://x/foo:", False),
        ("https://x/foo:<?>?<?>", "https://x/foo:w?r", True),
        ("https://x/foo:<?>?<?>", "https://x/foo:w&r", False),
        ("https://x/foo:<*>", "https://x/foo:", True),
        ("https://x/foo:<m[a,o,u]n>", "https://x/foo:man", True),
        ("https://x/foo:<m[a,o,u]n>", "https://x/foo:moon", False),
        ("https://x/foo:<m[!a,o,u]n>", "https://x/foo:min", True),
        ("https://x/foo:<m[!a,o,u]n>", "https://x/foo:man", False),
        ("http://example.com/<*>", "http://example.com/foo/bar", False),
        # separators: `*` stays in one segment or host label, `**` crosses
        ("http://example.com/<*>", "http://example.com/foo", True),
        ("http://example.com/<*>", "http://example.com/foo.html", False),
        ("http://example.com/<**>", "http://example.com/foo/bar.html", True),
        ("https://<*>.example.com/", "https://api.example.com/", True),
        ("https://<*>.example.com/", "https://a.b.example.com/", False),
        ("https://<**>.example.com/", "https://a.b.example.com/", True),
        ("https://x/<[a-c]>", "https://x/b", True),
        ("https://x/<[!a-c]>", "https://x/d", True),
        ("https://x/<[!a-c]>", "https://x/b", False),
        ("https://x/<{api,v1/*}>/x", "https://x/v1/users/x", True),
        ("https://x/<{api,v1/*}>/x", "https://x/v1/users/more/x", False),
        # outside <...> glob characters are literal
        ("https://x/*/<*>", "https://x/*/a", True),
        ("https://x/*/<*>", "https://x/b/a", False),
        ("https://x/<\\*>", "https://x/*", True),
    ],
)
def test_glob_patterns(pattern: str, url: str, expected: bool) -> None:
    result = matcher(rule("r", pattern), strategy="glob").match("GET", *split(url))
    assert (result is not None) is expected
    if result is not None:
        assert result.capture_groups == ()  # glob exposes none, as in Oathkeeper


@pytest.mark.parametrize(
    ("pattern", "url", "groups"),
    [
        ("https://x/users/<[0-9]+>", "https://x/users/42", ("42",)),
        ("https://<[a-z]+>.x.com/<.*>", "https://api.x.com/a/b", ("api", "a/b")),
        # inner groups count too, in order of their opening parenthesis
        ("https://x/<(a)(b)?>/<c>", "https://x/a/c", ("a", "a", "", "c")),
        # .NET named groups are accepted and come after the unnamed ones (regexp2's order)
        ("https://x/<(?<id>[0-9]+)>/<(x)>", "https://x/7/x", ("7", "x", "x", "7")),
        ("https://x/static", "https://x/static", ()),
    ],
)
def test_capture_groups(pattern: str, url: str, groups: tuple[str, ...]) -> None:
    result = matcher(rule("r", pattern)).match("GET", *split(url))
    assert result is not None
    assert result.capture_groups == groups


OVERLAPPING = [
    rule("catch-all", "https://app.example.com/<.*>", ("GET", "POST")),
    rule("api", "https://app.example.com/api/<.*>", ("GET", "POST")),
    rule("api-users", "https://app.example.com/api/users/<.*>", ("GET",)),
    rule("user-edit", "https://app.example.com/api/users/<[0-9]+>/edit", ("GET",)),
    rule("health", "https://app.example.com/<health|ready>", ("GET",), priority=10),
    rule("admin", "https://app.example.com/<.*>/admin/<.*>", ("GET",), priority=5),
]


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/", "catch-all"),
        ("GET", "/api/things", "api"),  # longer literal prefix
        ("POST", "/api/users/1", "api"),  # api-users is GET only
        ("GET", "/api/users/1", "api-users"),
        ("GET", "/api/users/1/edit", "user-edit"),  # same prefix, more literal characters
        ("GET", "/health", "health"),  # priority over the catch-all
        ("GET", "/api/users/admin/x", "admin"),  # priority over the longer prefix
        ("POST", "/api/users/admin/x", "api"),  # admin is GET only
    ],
)
def test_overlapping_rules_resolve_by_priority_then_specificity(
    method: str, path: str, expected: str
) -> None:
    m = matcher(*OVERLAPPING)
    assert m.match(method, "https", "app.example.com", path).rule.id == expected  # type: ignore[union-attr]
    explanation = m.explain(method, "https", "app.example.com", path)
    assert explanation.selected is not None and explanation.selected.rule.id == expected


def test_a_true_tie_goes_to_the_rule_loaded_first_and_is_reported() -> None:
    m = matcher(
        rule("first", "https://x/<[a-z]+>"),
        rule("second", "https://x/<[a-y]+>"),
        rule("other-method", "https://x/<.*>", ("POST",)),
    )
    assert matched(m, "GET", "https://x/abc") == "first"
    assert [(a.id, b.id) for a, b in m.ties()] == [("first", "second")]
    verdicts = {v.rule.id: v for v in m.explain("GET", "https", "x", "/abc").verdicts}
    assert verdicts["second"].outcome == "shadowed"
    assert "tie" in verdicts["second"].reason and "loaded first" in verdicts["second"].reason
    # priority settles it
    m = matcher(
        rule("first", "https://x/<[a-z]+>"), rule("second", "https://x/<[a-y]+>", priority=1)
    )
    assert matched(m, "GET", "https://x/abc") == "second"
    assert m.ties() == []


def test_default_rule_answers_when_nothing_matches() -> None:
    m = matcher(rule("api", "https://x/api/<.*>"), rule("fallback", None), default="fallback")
    assert matched(m, "GET", "https://x/api/1") == "api"
    result = m.match("DELETE", "https", "elsewhere", "/")
    assert result is not None and result.rule.id == "fallback" and result.default
    verdicts = {v.rule.id: v.outcome for v in m.explain("GET", "https", "x", "/nope").verdicts}
    assert verdicts == {"api": "no match", "fallback": "default"}
    assert matched(matcher(rule("api", "https://x/api/<.*>")), "GET", "https://x/") is None


def test_only_the_default_rule_may_omit_match() -> None:
    with pytest.raises(RuleError, match=r"rules.json: rule 'orphan': match: must be set"):
        matcher(rule("orphan", None))
    with pytest.raises(
        RuleError, match=r"default_rule: no rule has the id 'fallbak' \(did you mean fallback\?\)"
    ):
        matcher(rule("fallback", None), default="fallbak")


def test_scheme_and_host_match_whatever_their_case() -> None:
    m = matcher(rule("api", "https://API.Example.com/Admin/<.*>"), rule("open", "https://<.*>"))
    assert m.match("GET", "HTTPS", "api.EXAMPLE.com", "/Admin/x").rule.id == "api"  # type: ignore[union-attr]
    # the path stays case-sensitive (the caller normalises it, not the matcher)
    assert m.match("GET", "https", "api.example.com", "/admin/x").rule.id == "open"  # type: ignore[union-attr]


def test_a_rule_without_methods_matches_nothing() -> None:
    assert matched(matcher(rule("r", "https://x/<.*>", ())), "GET", "https://x/a") is None


@pytest.mark.parametrize("strategy", ["regexp", "glob"])
def test_a_hundred_rules_are_narrowed_by_the_index(strategy: Strategy) -> None:
    pattern = "<.*>" if strategy == "regexp" else "<**>"
    rules = [
        rule(f"svc-{i}", f"https://app.example.com/svc{i}/{pattern}", ("GET", "POST"))
        for i in range(90)
    ]
    rules += [rule(f"host-{i}", f"https://h{i}.example.com/{pattern}") for i in range(9)]
    rules.append(rule("catch-all", f"https://app.example.com/{pattern}"))
    m = matcher(*rules, strategy=strategy)
    candidates = m.candidates("GET", "https", "app.example.com", "/svc42/a/b")
    assert [r.id for r in candidates] == ["svc-42", "catch-all"]  # best first
    assert matched(m, "GET", "https://app.example.com/svc42/a/b") == "svc-42"
    assert matched(m, "GET", "https://app.example.com/svc420/a") == "catch-all"
    assert [r.id for r in m.candidates("GET", "https", "h3.example.com", "/x")] == ["host-3"]
    assert m.candidates("DELETE", "https", "app.example.com", "/svc42/") == ()
    assert m.candidates("GET", "https", "other.example.com", "/") == ()


def test_the_index_agrees_with_a_scan_of_every_rule() -> None:
    m = matcher(*OVERLAPPING, rule("glob-like", "https://app.example.com/api/<v[0-9]>/<.*>"))
    paths = ["/", "/api", "/api/", "/api/v1/x", "/api/users/", "/api/users/9/edit", "/x/admin/y"]
    for method in ("GET", "POST", "PUT"):
        for path in paths:
            fast = m.match(method, "https", "app.example.com", path)
            slow = m.explain(method, "https", "app.example.com", path).selected
            assert (fast and fast.rule.id) == (slow and slow.rule.id), (method, path)


def test_explain_says_why_each_rule_did_not_match() -> None:
    m = matcher(
        rule("post-only", "https://app.example.com/<.*>", ("POST",)),
        rule("other-host", "https://api.example.com/<.*>"),
        rule("other-path", "https://app.example.com/api/<.*>"),
        rule("winner", "https://app.example.com/<.*>", priority=1),
        rule("loser", "https://app.example.com/<.*>"),
    )
    explanation = m.explain("get", "https", "app.example.com", "/home")
    reasons = {v.rule.id: (v.outcome, v.reason) for v in explanation.verdicts}
    assert reasons["post-only"] == ("no match", "method GET is not one of POST")
    assert reasons["other-host"][1].startswith(
        "scheme/host: the rule is for https://api.example.com"
    )
    assert reasons["other-path"][1].startswith("path: '/home' does not match '/api/<.*>'")
    assert reasons["winner"][0] == "selected"
    assert reasons["loser"] == (
        "shadowed",
        "matches, but rule 'winner' wins: higher priority (1 > 0)",
    )
    assert explanation.url == "https://app.example.com/home"


@pytest.mark.parametrize(
    ("template", "error"),
    [
        # Oathkeeper's TestDelimiters
        ("<", "unbalanced '<'"),
        (">", "unbalanced '>'"),
        ("><>", "unbalanced '>'"),
        ("foo.bar<var", "unbalanced '<'"),
        ("foo.bar<<>var", "unbalanced '<'"),
    ],
)
def test_unbalanced_delimiters_are_refused(template: str, error: str) -> None:
    with pytest.raises(PatternError, match=error):
        split_template(template)


def test_balanced_delimiters_split_as_in_oathkeeper() -> None:
    assert split_template("foo.bar<<>><>tt<>") == [
        (False, "foo.bar"),
        (True, "<>"),
        (True, ""),
        (False, "tt"),
        (True, ""),
    ]


@pytest.mark.parametrize(
    ("template", "strategy", "error"),
    [
        ("https://x/<[a-z>", "regexp", r"pattern #2 <\[a-z> is not a valid regex"),
        ("https://x/<(?<=a)b>", "regexp", "unbalanced"),  # as in Oathkeeper: `<` counts
        ("https://x/<{a,b>", "glob", r"'\{' is not closed"),
        ("https://x/<[a-z0-9]>", "glob", "must close right after its upper bound"),
        ("https://x/<[abc>", "glob", r"'\[' is not closed"),
        ("https://x/<[]>", "glob", "empty character class"),
    ],
)
def test_bad_patterns_are_refused(template: str, strategy: Strategy, error: str) -> None:
    with pytest.raises(PatternError, match=error):
        compile_url(template, strategy)


def test_specificity_counts_literal_characters() -> None:
    compiled = compile_url("https://Example.com/api/<[0-9]+>/edit", "regexp")
    assert compiled.prefix == "https://example.com/api/"
    assert compiled.literal_length == len("https://example.com/api//edit")


PUBLIC_AND_PRIVATE = [
    rule("public", "https://app.example.com/public/<.*>"),
    rule("private", "https://app.example.com/<.*>"),
    rule("fallback", None),
]


@pytest.mark.parametrize(
    ("scheme", "host", "path", "expected"),
    [
        ("https", "app.example.com", "/public/a", "public"),
        ("https", "app.example.com", "/secret", "private"),
        # the same host spelled otherwise must not fall to the default rule
        ("https", "APP.example.COM", "/secret", "private"),
        ("https", "app.example.com:443", "/secret", "private"),
        ("https", "app.example.com.", "/secret", "private"),
        ("HTTPS", "app.example.com.:443", "/secret", "private"),
        ("https", "app.example.com:8443", "/secret", "fallback"),  # another origin
        ("http", "app.example.com", "/secret", "fallback"),
    ],
)
def test_one_host_in_every_spelling_gets_its_rule(
    scheme: str, host: str, path: str, expected: str
) -> None:
    m = matcher(*PUBLIC_AND_PRIVATE, default="fallback")
    assert m.match("GET", scheme, host, path).rule.id == expected  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("scheme", "host", "path"),
    [
        # a Host that carries a path would reach the public rule with /secret forwarded
        ("https", "app.example.com/public", "/secret"),
        ("https", "app.example.com/public/", "secret"),
        ("https", "app.example.com\\public", "/secret"),
        ("https", "user@app.example.com", "/secret"),
        ("https", "app.example.com?", "/secret"),
        ("https", "app.example.com#", "/secret"),
        ("https", "app.example.com ", "/secret"),
        ("https", "app.example.com:x", "/secret"),
        ("https", "", "/secret"),
        ("https", "app.example.com", "public/secret"),
        ("ftp", "app.example.com", "/secret"),
    ],
)
def test_a_request_that_cannot_be_matched_is_refused(scheme: str, host: str, path: str) -> None:
    m = matcher(*PUBLIC_AND_PRIVATE, default="fallback")
    with pytest.raises(BadRequest):
        m.match("GET", scheme, host, path)
    with pytest.raises(BadRequest):
        m.explain("GET", scheme, host, path)


def test_a_rule_naming_the_default_port_matches_without_it() -> None:
    m = matcher(rule("r", "https://App.example.com:443/<.*>"), rule("h", "http://x:80"))
    assert matched(m, "GET", "https://app.example.com/a") == "r"
    assert m.match("GET", "http", "x", "/") is None  # "http://x" has no path: never a request
    assert m.match("GET", "https", "app.example.com:443", "/").rule.id == "r"  # type: ignore[union-attr]


def test_explain_reads_rules_written_in_another_case_or_with_the_default_port() -> None:
    m = matcher(
        rule("api", "HTTPS://App.Example.com:443/api/<.*>"),
        rule("broken", "https://app.example.com/<.*>", authenticators=[]),
    )
    verdicts = {
        v.rule.id: v for v in m.explain("GET", "https", "app.example.com", "/home").verdicts
    }
    assert verdicts["api"].reason == "path: '/home' does not match '/api/<.*>'"
    assert verdicts["broken"].outcome == "selected"
    assert verdicts["broken"].reason.endswith("the rule is invalid, so the request fails closed")


# Small alphabets, so that random prefixes share, split and nest radix-tree edges.
_LITERAL = st.text(alphabet="ab/", max_size=6)
_RULES = st.lists(
    st.tuples(
        _LITERAL,
        st.sampled_from(["", "<[ab]*>", "<b/.*>", "<a?>"]),
        _LITERAL,
        st.sampled_from([("GET",), ("POST",), ("GET", "POST")]),
        st.integers(min_value=0, max_value=2),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=100, deadline=None)
@given(rules=_RULES, paths=st.lists(_LITERAL, min_size=1, max_size=8))
def test_the_index_agrees_with_a_scan_for_any_rule_set(
    rules: list[tuple[str, str, str, tuple[str, ...], int]], paths: list[str]
) -> None:
    documents = [
        rule(f"r{i}", f"https://x/{head}{pattern}{tail}", methods, priority=priority)
        for i, (head, pattern, tail, methods, priority) in enumerate(rules)
    ]
    m = matcher(*documents)
    for path in paths:
        for method in ("GET", "POST"):
            fast = m.match(method, "https", "x", "/" + path)
            slow = m.explain(method, "https", "x", "/" + path).selected
            assert (fast and fast.rule.id) == (slow and slow.rule.id)
            assert (fast and fast.capture_groups) == (slow and slow.capture_groups)


def test_a_rule_may_name_its_own_strategy() -> None:
    """`match.strategy` (ours) overrides the rule set's matching_strategy for one rule."""

    def with_strategy(rule_id: str, url: str, strategy: str) -> Any:
        document = rule(rule_id, url)
        document["match"]["strategy"] = strategy
        return document

    for default in ("regexp", "glob"):
        m = matcher(
            with_strategy("users", "https://app.example.com/api/v1/users/<[0-9]+>", "regexp"),
            with_strategy("files", "https://app.example.com/api/v1/files/<*>", "glob"),
            rule(
                "other",
                "https://app.example.com/<**>"
                if default == "glob"
                else "https://app.example.com/<.*>",
            ),
            strategy=default,  # type: ignore[arg-type]
        )
        assert matched(m, "GET", "https://app.example.com/api/v1/users/42") == "users"
        assert matched(m, "GET", "https://app.example.com/api/v1/users/4x") == "other"
        assert matched(m, "GET", "https://app.example.com/api/v1/files/report") == "files"
        assert matched(m, "GET", "https://app.example.com/api/v1/files/a/b") == "other"
        result = m.match("GET", *split("https://app.example.com/api/v1/users/42"))
        assert result is not None and result.capture_groups == ("42",)


@pytest.mark.parametrize(
    ("strategy", "url", "error"),
    [
        ("globs", "https://a/<.*>", r"match\.strategy: must be regexp or glob, got 'globs'"),
        (3, "https://a/<.*>", r"match\.strategy: must be regexp or glob, got 3"),
        ("regexp", "https://a/<[>", r"match\.url: pattern #2 <\[> is not a valid regex"),
        ("glob", "https://a/<[]>", r"match\.url: glob: empty character class"),
    ],
)
def test_a_bad_rule_strategy_is_refused(strategy: Any, url: str, error: str) -> None:
    document = rule("r", url)
    document["match"]["strategy"] = strategy
    with pytest.raises(RuleError, match=error):
        matcher(document, strategy="glob" if strategy == "regexp" else "regexp")
