"""The access-rule template evaluator (SPEC §16): Oathkeeper's Go-template subset.

Expected outputs marked "Go" were produced by Go's text/template with Oathkeeper's
function map (missingkey=zero, its print and printIndex, sprig) on the same data; the
deliberate differences (absent values render empty, refusals at load) are marked.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from werkzeug.datastructures import EnvironHeaders, Headers

from ory_wsgi.errors import ConfigError
from ory_wsgi.rules import template as template_module
from ory_wsgi.rules.template import (
    MAX_RANGE_STEPS,
    MatchContext,
    RequestURL,
    TemplateContext,
    TemplateError,
    TemplateRenderError,
    compile_template,
)

EXTRA = {
    "iss": "issuer",
    "n": 10,
    "big": 1234567,
    "f": 3.14159,
    "b": True,
    "nul": None,
    "list": ["a", "b"],
    "nested": {"x": {"y": "z"}, "k": 1},
    "identity": {"traits": {"email": "a@b.c", "roles": ["admin", "user"]}},
    "q": 'he said "hi"\n<tag>&',
    "u": "é✓",
    "e": "",
    "empty": [],
    "mixed": [1, "a", None, {"k": "v"}],
    "example.com/some-claims": ["Foo", "Bar"],
}
CONTEXT = TemplateContext(
    subject="foo",
    extra=EXTRA,
    header=Headers([("X-Set", "v")]),
    match=MatchContext(
        regexp_capture_groups=("users", "42"),
        url=RequestURL("https", "example.com", "/api/users/42", "x=1&x=2&q=a+b"),
        method="GET",
        header=Headers([("X-Foo", "bar"), ("X-Foo", "baz"), ("Authorization", "Bearer t")]),
    ),
)


def render(source: str, context: TemplateContext = CONTEXT) -> str:
    return compile_template(source, where="rule r1 headers.X").render(context)


# Every supported form; the expected text is Go's unless the comment says otherwise.
SUPPORTED = [
    ("text only", "plain text", "plain text"),
    ("subject", "{{ print .Subject }}", "foo"),
    ("subject bare", "{{ .Subject }}", "foo"),
    ("prefix", "realm:resources:users:{{ print .Subject }}", "realm:resources:users:foo"),
    ("kitchen sink", "{{ print .Subject }} {{ print .Extra.iss }}", "foo issuer"),
    ("nested", "{{ print .Extra.identity.traits.email }}", "a@b.c"),
    ("parenthesised", "{{ print (((.Extra.identity).traits).email) }}", "a@b.c"),
    ("int", "{{ .Extra.n }}", "10"),
    ("float", "{{ print .Extra.f }}", "3.14159"),
    ("bool", "{{ print .Extra.b }}", "true"),
    ("list prints as Go", "{{ .Extra.list }}", "[a b]"),
    ("map prints as Go", "{{ .Extra.nested }}", "map[k:1 x:map[y:z]]"),
    ("nil inside a list", "{{ .Extra.mixed }}", "[1 a <nil> map[k:v]]"),
    ("empty list", "{{ .Extra.empty }}", "[]"),
    ("unicode", "{{ .Extra.u }}", "é✓"),
    # Python ints stay ints (Go's JSON would have made it 1.234567e+06).
    ("big int", "{{ .Extra.big }}", "1234567"),
    ("print then toJson", "{{ print .Extra.identity.traits.roles | toJson }}", '"[admin user]"'),
    ("toJson list", "{{ .Extra.identity.traits.roles | toJson }}", '["admin","user"]'),
    ("toJson escapes", "{{ .Extra.q | toJson }}", '"he said \\"hi\\"\\n\\u003ctag\\u003e\\u0026"'),
    ("toJson unicode", "{{ .Extra.u | toJson }}", '"é✓"'),
    ("toJson mixed", "{{ .Extra.mixed | toJson }}", '[1,"a",null,{"k":"v"}]'),
    (
        "toJson numbers",
        "{{ .Extra.f | toJson }} {{ 1e21 | toJson }} {{ 1e-7 | toJson }}",
        "3.14159 1e+21 1e-7",
    ),
    ("printf q", '{{ printf "%q" .Extra.q }}', '"he said \\"hi\\"\\n<tag>&"'),
    ("printf +q", '{{ printf "%+q" .Extra.u }}', '"\\u00e9\\u2713"'),
    ("printf q list", '{{ printf "%+q" .Extra.list }}', '["a" "b"]'),
    ("printf s d", '{{ printf "%s-%d" .Subject .Extra.n }}', "foo-10"),
    ("printf missing arg", '{{ printf "%s-%d" .Subject }}', "foo-%!d(MISSING)"),
    ("printf extra arg", '{{ printf "%s" .Subject 3 }}', "foo%!(EXTRA int=3)"),
    ("printf x", '{{ printf "%x" .Subject }}', "666f6f"),
    ("printf widths", '{{ printf "%5.2f|%-6s|" .Extra.f .Subject }}', " 3.14|foo   |"),
    ("printf bad verb", '{{ printf "%d" .Extra.f }}', "%!d(float64=3.14159)"),
    ("printf unknown verb", '{{ printf "%z" .Subject }}', "%!z(string=foo)"),
    (
        "printf flags per element",
        '{{ printf "%3s|%-3v|%05d|%+.1f|%X|%05v" .Extra.list .Extra.list 42 .Extra.f "hi" -3 }}',
        "[  a   b]|[a   b  ]|00042|+3.1|6869|-0003",
    ),
    ("printf rune", '{{ printf "%q" 65 }}', "'A'"),
    ("printf percent", '{{ printf "100%%" }}', "100%"),
    ("printf piped", '{{ .Extra.f | printf "%.1f" }}', "3.1"),
    (
        "printf floats",
        '{{ printf "%v %v %v" 1e21 0.00001 123456789.0 }}',
        "1e+21 1e-05 1.23456789e+08",
    ),
    ("printIndex", "{{ printIndex .MatchContext.RegexpCaptureGroups 0 }}", "users"),
    ("printIndex out of range", "{{ printIndex .MatchContext.RegexpCaptureGroups 5 }}", ""),
    (
        "printIndex migrated",
        "{{ printIndex .MatchContext.RegexpCaptureGroups (sub 2 1 | int)}}",
        "42",
    ),
    ("index list", "{{ index .MatchContext.RegexpCaptureGroups 1 }}", "42"),
    ("index map", '{{ index .Extra.identity.traits "email" }}', "a@b.c"),
    (
        "index dotted key join",
        '{{- (index .Extra "example.com/some-claims") | join "," -}}',
        "Foo,Bar",
    ),
    ("url path", "{{ .MatchContext.URL.Path }}", "/api/users/42"),
    ("url", "{{ .MatchContext.URL }}", "https://example.com/api/users/42?x=1&x=2&q=a+b"),
    (
        "url parts",
        "{{ .MatchContext.URL.Host }} {{ .MatchContext.URL.Scheme }}",
        "example.com https",
    ),
    ("raw query", "{{ .MatchContext.URL.RawQuery }}", "x=1&x=2&q=a+b"),
    ("query", "{{ .MatchContext.URL.Query }}", "map[q:[a b] x:[1 2]]"),
    ("query get", '{{ .MatchContext.URL.Query.Get "x" }}', "1"),
    ("query get plus", '{{ .MatchContext.URL.Query.Get "q" }}', "a b"),
    ("query get none", '{{ .MatchContext.URL.Query.Get "nope" }}', ""),
    ("method", "{{ .MatchContext.Method }}", "GET"),
    ("header get", '{{ .MatchContext.Header.Get "x-foo" }}', "bar"),
    ("header map", "{{ .MatchContext.Header }}", "map[Authorization:[Bearer t] X-Foo:[bar baz]]"),
    ("header key", "{{ .MatchContext.Header.Authorization }}", "[Bearer t]"),
    ("header index", '{{ index .MatchContext.Header "X-Foo" }}', "[bar baz]"),
    ("session header", '{{ .Header.Get "X-Set" }}', "v"),
    (
        "header toJson",
        "{{ .MatchContext.Header | toJson }}",
        '{"Authorization":["Bearer t"],"X-Foo":["bar","baz"]}',
    ),
    ("urlquery", "{{ .Extra.q | urlquery }}", "he+said+%22hi%22%0A%3Ctag%3E%26"),
    ("urlquery unicode", "{{ .Extra.u | urlquery }}", "%C3%A9%E2%9C%93"),
    ("upper", "{{ .Subject | upper }}{{ .Extra.u | upper }}", "FOOÉ✓"),
    ("lower", '{{ "AbC" | lower }}', "abc"),
    ("quote", "{{ .Extra.q | quote }}", '"he said \\"hi\\"\\n<tag>&"'),
    ("quote number", "{{ .Extra.n | quote }}", '"10"'),
    ("squote", "{{ squote .Subject }}", "'foo'"),
    ("join", '{{ .Extra.list | join "," }}', "a,b"),
    ("join skips nil", '{{ .Extra.mixed | join "," }}', "1,a,map[k:v]"),
    ("default missing", '{{ .Extra.missing | default "dflt" }}', "dflt"),
    ("default empty", '{{ .Extra.e | default "dflt" }}', "dflt"),
    ("default set", '{{ .Extra.iss | default "dflt" }}', "issuer"),
    ("if missing", "{{ if .Extra.missing }}yes{{ else }}no{{ end }}", "no"),
    ("if empty list", "{{ if .Extra.empty }}yes{{ else }}no{{ end }}", "no"),
    (
        "if else if",
        '{{ if eq .Subject "x" }}1{{ else if eq .Subject "foo" }}2{{ else }}3{{ end }}',
        "2",
    ),
    (
        "if guarded index",
        '{{ if .Extra.identity }}{{ index .Extra.identity.traits "email" }}{{ end }}',
        "a@b.c",
    ),
    (
        "range vars",
        "{{ range $i, $r := .Extra.identity.traits.roles }}{{ $i }}={{ $r }};{{ end }}",
        "0=admin;1=user;",
    ),
    ("range dot", "{{ range .Extra.nested }}[{{ . }}]{{ end }}", "[1][map[y:z]]"),
    (
        "range map",
        "{{ range $k, $v := .Extra.nested }}{{ $k }}:{{ $v }} {{ end }}",
        "k:1 x:map[y:z] ",
    ),
    ("range one var", "{{ range $r := .Extra.list }}<{{ $r }}>{{ end }}", "<a><b>"),
    ("range else", "{{ range .Extra.missing }}x{{ else }}none{{ end }}", "none"),
    (
        "range commas (real rule file)",
        "{{ $roles := .Extra.identity.traits.roles }}{{ range $i, $role := $roles }}{{ $role }}"
        "{{ if ne (add $i 1) (len $roles) }},{{ end }}{{ end }}",
        "admin,user",
    ),
    ("range root", "{{ range .Extra.list }}{{ $.Subject }}{{ end }}", "foofoo"),
    (
        "assign",
        "{{ $c := false }}{{ range .Extra.list }}{{ if $c }},{{ end }}"
        "{{ . }}{{ $c = true }}{{ end }}",
        "a,b",
    ),
    ("with", "{{ with .Extra.identity.traits }}{{ .email }}{{ end }}", "a@b.c"),
    ("with else", "{{ with .Extra.missing }}x{{ else }}none{{ end }}", "none"),
    ("with known", "{{ with .MatchContext }}{{ .Method }}{{ end }}", "GET"),
    ("has", '{{ has "admin" .Extra.identity.traits.roles }}', "true"),
    ("has printf", '{{ if has (printf "dfsp:%s" "x") .Extra.list }}y{{ else }}n{{ end }}', "n"),
    ("eq", '{{ eq .Extra.iss "issuer" }}', "true"),
    ("eq any", '{{ eq .Subject "a" "foo" }}', "true"),
    # Go refuses float64 vs int; ints from JSON compare with literals here.
    ("eq number", "{{ eq .Extra.n 10 }}", "true"),
    (
        "lt",
        '{{ lt 1 2 }} {{ gt 1 2 }} {{ le 2 2 }} {{ ge 1 2 }} {{ lt 1 "a" }}',
        "true false true false false",
    ),
    ("len bytes", "{{ len .Extra.u }}", "5"),
    ("len piped", "{{ .Subject | len }}", "3"),
    ("and or not", '{{ not .Extra.b }} {{ and 1 0 }} {{ or "" "x" }}', "false 0 x"),
    (
        "literals",
        '{{ 3 }} {{ 1.5 }} {{ true }} {{ "s" }} {{ 1e6 }} {{ 0x10 }} {{ `r\\n` }}',
        "3 1.5 true s 1e+06 16 r\\n",
    ),
    ("string escapes", '{{ "a\\tb\\u00e9\\x41" }}', "a\tbéA"),
    ("trim markers", 'a {{- " b " -}} c', "a b c"),
    ("trim newlines", "{\n  {{- print .Subject -}}\n}", "{foo}"),
    ("comment", "{{/* comment */}}x", "x"),
    ("trimmed comment", "a {{- /* c */ -}} b", "ab"),
    ("string with braces", '{{ "}}" }}', "}}"),
    ("print nil", "{{ print nil }}", ""),
    ("toString", "{{ .Extra.list | toString }}", "[a b]"),
    (
        "string functions",
        '{{ trim " x " }}{{ replace "a" "b" "aa" }}{{ trimPrefix "a" "ab" }}',
        "xbbb",
    ),
    (
        "contains",
        '{{ contains "oo" .Subject }} {{ hasPrefix "f" .Subject }} {{ hasSuffix "x" .Subject }}',
        "true true false",
    ),
    ("splitList", '{{ splitList "," "a,b" }}', "[a b]"),
    ("b64enc", "{{ b64enc .Subject }}", "Zm9v"),
    ("coalesce empty", '{{ coalesce .Extra.missing .Extra.e "z" }} {{ empty .Extra.e }}', "z true"),
    ("add1 int", '{{ add1 "41" }} {{ int 3.9 }} {{ add 1 2 3 }}', "42 3 6"),
]


@pytest.mark.parametrize(
    ("source", "expected"), [c[1:] for c in SUPPORTED], ids=[c[0] for c in SUPPORTED]
)
def test_supported_forms_render_as_go_does(source: str, expected: str) -> None:
    assert render(source) == expected


# Where Oathkeeper prints "<no value>" or fails the request, an absent value is empty.
ABSENT = [
    "{{ .Extra.missing }}",
    "{{ .Extra.nul }}",
    "{{ print .Extra.missing }}",
    "{{ .Extra.missing.deeper }}",
    "{{ print .Extra.missing.deeper.still }}",
    "{{ .Extra.iss.deeper }}",
    "{{ .Extra.list.field }}",
    "{{ index .MatchContext.RegexpCaptureGroups 5 }}",
    "{{ index .Extra.list -1 }}",
    '{{ index .Extra.list "a" }}',
    "{{ index .Extra.nested 1 }}",
    '{{ printf "%s" .Extra.missing }}',
    '{{ printf "%v" .Extra.missing }}',
    "{{ urlquery .Extra.missing }}",
    "{{ .Extra.missing | urlquery }}",
    "{{ lower .Extra.missing }}",
    "{{ .Extra.missing | quote }}",
    '{{ .Extra.missing | join "," }}',
    "{{ printIndex .Extra.missing 0 }}",
    "{{ printIndex .Extra.list .Extra.f }}",
    '{{ .Extra.missing.Get "x" }}',
    "{{ with .Extra.missing }}{{ .x.y }}{{ end }}",
    "{{ range .Extra.iss }}x{{ end }}",
    "{{ .Extra.nested.x.y.z }}",
]


@pytest.mark.parametrize("source", ABSENT)
def test_absent_values_render_empty_never_no_value(source: str) -> None:
    assert render(source) == ""
    assert render(source, TemplateContext()) == ""


def test_missing_extras_render_empty_like_oathkeeper_header_mutator() -> None:
    # Oathkeeper's "Missing Extras" and "Nested Extras" header-mutator cases.
    nested = {"nested": {"int": 10, "float64": 3.14159, "bool": True}}
    context = TemplateContext(subject="foo", extra=nested)
    got = {
        source: compile_template(source).render(context)
        for source in (
            "{{ print .Extra.nested.int }}",
            "{{ print .Extra.nested.float64 }}",
            "{{ print .Extra.nested.bool}}",
            "{{ print .Extra.nested.nil }}",
            "{{ print .Extra.iss }}",
        )
    }
    assert list(got.values()) == ["10", "3.14159", "true", "", ""]


# Every refused form, with the start of its message and its column.
REFUSED = [
    ("{{ Invalid Template }}", 'unsupported function "Invalid"', "column 4"),
    ("{{ exec .Subject }}", 'unsupported function "exec"', "column 4"),
    ("{{ call .Extra.f }}", 'unsupported function "call"', "column 4"),
    ("{{ lowr .Subject }}", 'unsupported function "lowr" (did you mean "lower"?)', "column 4"),
    ("{{ .UnknownField }}", 'unknown field "UnknownField" of the session', "column 4"),
    (
        "{{ print .subject }}",
        'unknown field "subject" of the session (did you mean "Subject"?)',
        "column 10",
    ),
    (
        "{{ .MatchContext.Url.Path }}",
        'unknown field "Url" of .MatchContext (did you mean "URL"?)',
        "column 4",
    ),
    ("{{ .MatchContext.URL.Secret }}", 'unknown field "Secret" of .MatchContext.URL', "column 4"),
    ("{{ .Subject.x }}", 'cannot take field "x" of a plain value', "column 4"),
    ("{{ print .Subject .Subject }}", "print takes exactly 1 argument", "column 4"),
    ("{{ .MatchContext.URL.Query.Get }}", "Get takes 1 argument(s), given none", "column 4"),
    ('{{ .MatchContext.Header.Get "a" "b" }}', "Get takes 1 argument(s), given 2", "column 4"),
    ('{{ .Subject "x" }}', '"Subject" is a field, not a method', "column 4"),
    ('{{ "x" "y" }}', "cannot give arguments to a value that is not a function", "column 4"),
    ('{{ .MatchContext.Header.Foo "x" }}', '"Foo" is a key, not a method', "column 4"),
    ('{{ .MatchContext.Nope "x" }}', 'unknown field "Nope" of .MatchContext', "column 4"),
    ("{{ .Subject | .Extra }}", '"Extra" is a field, not a method', "column 15"),
    ("{{ printf .Subject }}", "printf needs a quoted string as its format", "column 4"),
    ('{{ printf "%[1]s" .Subject }}', "argument indexes", "column 11"),
    ('{{ printf "%*d" 5 1 }}', "argument indexes and * widths", "column 11"),
    ('{{ printf "%99999s" .Subject }}', "printf widths and precisions above 1024", "column 11"),
    ('{{ template "x" }}', '"template" is not supported', "column 4"),
    ('{{ define "x" }}{{ end }}', '"define" is not supported', "column 4"),
    ('{{ block "x" . }}{{ end }}', '"block" is not supported', "column 4"),
    ("{{ range .Extra.list }}{{ break }}{{ end }}", '"break" is not supported', "column 27"),
    ("{{ 'a' }}", "character constants are not supported", "column 4"),
    ("{{ nil }}", "nil is not a command", "column 4"),
    ("{{ }}", "missing value for command", "column 1"),
    ("{{ .Subject", "unclosed action", "column 1"),
    ("{{ if .Subject }}x", "missing {{end}} for if", "column 4"),
    ("{{ end }}", "unexpected {{end}}", "column 4"),
    ("x{{ else }}", "unexpected {{else}}", "column 5"),
    ("{{ $x }}", "undefined variable $x", "column 4"),
    ("{{ $x = 1 }}", "undefined variable $x", "column 4"),
    ("{{ if true }}{{ $y := 1 }}{{ end }}{{ $y }}", "undefined variable $y", "column 39"),
    ('{{ "abc }}', "unterminated quoted string", "column 4"),
    ('{{ "\\q" }}', "bad escape in quoted string", "column 5"),
    ("{{ 12abc }}", "bad number syntax", "column 4"),
    ("{{ 99999999999999999999 }}", "number out of range", "column 4"),
    ("{{ print (.Subject }}", "unclosed left paren", "column 10"),
    ("{{ .Subject ! }}", "unexpected '!' in action", "column 13"),
    ('{{ "a".x }}', 'unexpected ".x" after term', "column 7"),
    ("{{ lower.x }}", 'unexpected ".x" after term', "column 9"),
    ("{{/* open", "unclosed comment", "column 1"),
    ("{{/* c */ x}}", "comment ends before closing delimiter", "column 8"),
    ("{{ ($x := 1) }}", "declarations in parentheses are not supported", "column 4"),
    ("{{ if $a, $b := .Extra.list }}{{ end }}", "undefined variable $a", "column 7"),
    ("{{ with .Extra }}{{ else with .Subject }}{{ end }}", "unexpected", "column"),
    ('{{ join "," }}', "join takes 2 argument(s), given 1", "column 4"),
    ("{{ eq 1 }}", "eq takes 2 or more argument(s), given 1", "column 4"),
    ("{{ and }}", "and takes at least 1 argument", "column 4"),
    ("a\nb {{ .Nope }}", 'unknown field "Nope"', "line 2, column 6"),
    ("(" * 60 + "{{ " + "(" * 60 + ".Subject" + ")" * 60 + " }}", "nested too deeply", "column"),
]


@pytest.mark.parametrize(("source", "message", "where"), REFUSED, ids=[r[0][:40] for r in REFUSED])
def test_refused_forms_name_the_rule_the_problem_and_the_column(
    source: str, message: str, where: str
) -> None:
    with pytest.raises(TemplateError) as caught:
        compile_template(source, where='rule "r1" mutators[0].headers.X-User')
    text = str(caught.value)
    assert text.startswith('rule "r1" mutators[0].headers.X-User: ')
    assert message in text
    assert where in text
    assert "\n" not in text
    assert isinstance(caught.value, ConfigError)


@pytest.mark.parametrize("value", [5, None, ["a"], {"a": 1}, True])
def test_a_template_that_is_not_text_is_refused(value: object) -> None:
    with pytest.raises(TemplateError, match=r"^rule r1 headers\.X: must be a string, not "):
        compile_template(value, where="rule r1 headers.X")  # type: ignore[arg-type]


def test_error_without_where_says_template() -> None:
    with pytest.raises(TemplateError, match=r"^template: unsupported function"):
        compile_template("{{ nope }}")


# Real template strings from Oathkeeper's docs and tests, and from rule files in use.
def test_oathkeeper_id_token_claims_from_the_docs_render_valid_json() -> None:
    claims = compile_template('{"aud": ["audience-1"], "session": {{ .Extra | toJson }}}')
    parsed = json.loads(claims.render(CONTEXT))
    assert parsed == {"aud": ["audience-1"], "session": json.loads(json.dumps(EXTRA))}


def test_oathkeeper_claims_with_capture_groups() -> None:
    context = TemplateContext(
        subject="foo",
        extra={"abc": "value1", "def": "value2"},
        match=MatchContext(regexp_capture_groups=("user", "pass")),
    )
    source = (
        '{"custom-claim": "{{ print .Extra.abc }}", '
        '"custom-claim2": "{{ printIndex .MatchContext.RegexpCaptureGroups 1}}", '
        '"aud": ["foo", "bar"]}'
    )
    assert json.loads(compile_template(source).render(context)) == {
        "custom-claim": "value1",
        "custom-claim2": "pass",
        "aud": ["foo", "bar"],
    }


def test_oathkeeper_docs_scope_printf() -> None:
    source = '{"aud": "{{ print .Extra.aud }}", "scope": {{ printf "%+q" .Extra.scp }}}'
    context = TemplateContext(extra={"aud": "api", "scp": ["read"]})
    assert json.loads(compile_template(source).render(context)) == {"aud": "api", "scope": ["read"]}


def test_remote_json_keto_payload_from_a_rule_file_in_use() -> None:
    source = """{
  "tuples": [
    {{- $roles := .Extra.identity.traits.roles }}
    {{- range $i, $role := $roles }}
    {"namespace": "role", "object": "{{ $role }}", "relation": "member"}
    {{- if ne (add $i 1) (len $roles) }},{{ end }}
    {{- end }}
  ]
}"""
    parsed = json.loads(compile_template(source).render(CONTEXT))
    assert [t["object"] for t in parsed["tuples"]] == ["admin", "user"]


def test_remote_json_payload_with_has_and_a_capture_group() -> None:
    source = (
        "{{ $id := printIndex .MatchContext.RegexpCaptureGroups 0 }}"
        '{{ if has (printf "dfsp:%s" $id) .Extra.roles }}{"allowed": "{{ $id }}"}{{ end }}'
    )
    allowed = TemplateContext(
        extra={"roles": ["dfsp:7"]}, match=MatchContext(regexp_capture_groups=("7",))
    )
    other = TemplateContext(
        extra={"roles": ["dfsp:8"]}, match=MatchContext(regexp_capture_groups=("7",))
    )
    assert compile_template(source).render(allowed) == '{"allowed": "7"}'
    assert compile_template(source).render(other) == ""


def test_header_values_are_case_insensitive_and_multi() -> None:
    context = TemplateContext(
        match=MatchContext(header=Headers([("x-api-key", "k1"), ("X-Api-Key", "k2")]))
    )
    assert render('{{ .MatchContext.Header.Get "X-API-KEY" }}', context) == "k1"
    assert render('{{ .MatchContext.Header.Values "x-api-key" }}', context) == "[k1 k2]"
    assert render("{{ .MatchContext.Header }}", context) == "map[X-Api-Key:[k1 k2]]"


def test_url_methods() -> None:
    url = RequestURL("http", "[::1]:8080", "/a b", "")
    context = TemplateContext(match=MatchContext(url=url))
    assert render("{{ .MatchContext.URL.Hostname }}", context) == "::1"
    assert render("{{ .MatchContext.URL.Port }}", context) == "8080"
    assert render("{{ .MatchContext.URL.EscapedPath }}", context) == "/a%20b"
    assert render("{{ .MatchContext.URL.RequestURI }}", context) == "/a%20b"
    assert render("{{ .MatchContext.URL }}", context) == "http://[::1]:8080/a%20b"
    assert render('{{ .MatchContext.URL.Query.Has "x" }}', context) == "false"


def test_query_parsing_drops_what_go_drops() -> None:
    url = RequestURL(raw_query="a=1;b=2&c=%zz&d=%41&&e")
    context = TemplateContext(match=MatchContext(url=url))
    assert render("{{ .MatchContext.URL.Query }}", context) == "map[d:[A] e:[]]"


def test_constant_templates_skip_rendering() -> None:
    template = compile_template("static value")
    assert template.constant == "static value"
    assert compile_template("{{ .Subject }}").constant is None


def test_output_is_bounded() -> None:
    template = compile_template("{{ .Extra.s }}{{ .Extra.s }}", max_output=10)
    assert template.render(TemplateContext(extra={"s": "12345"})) == "1234512345"
    with pytest.raises(TemplateRenderError, match="output went past 10 characters"):
        template.render(TemplateContext(extra={"s": "123456"}))


def test_range_output_is_bounded_while_it_runs() -> None:
    template = compile_template(
        "{{ range .Extra.l }}{{ range $.Extra.l }}{{ $.Extra.s }}{{ end }}{{ end }}",
        max_output=1000,
    )
    with pytest.raises(TemplateRenderError, match="output went past"):
        template.render(TemplateContext(extra={"l": list(range(50)), "s": "x" * 100}))


def test_range_iterations_are_bounded() -> None:
    template = compile_template("{{ range .Extra.l }}{{ range $.Extra.l }}{{ end }}{{ end }}")
    small = TemplateContext(extra={"l": list(range(99))})
    assert template.render(small) == ""
    big = TemplateContext(extra={"l": list(range(MAX_RANGE_STEPS))})
    with pytest.raises(TemplateRenderError, match="range went past"):
        template.render(big)


def test_replace_cannot_amplify_past_the_limit() -> None:
    template = compile_template('{{ replace "" .Extra.s .Extra.s }}')
    with pytest.raises(TemplateRenderError, match="replace would produce"):
        template.render(TemplateContext(extra={"s": "x" * 2000}))


def test_python_objects_in_data_are_never_asked_to_describe_themselves() -> None:
    calls: list[str] = []

    class Spy:
        def __str__(self) -> str:
            calls.append("str")
            return "spy"

        def __repr__(self) -> str:
            calls.append("repr")
            return "spy"

        def __getattr__(self, name: str) -> str:
            calls.append(name)
            return "attr"

    context = TemplateContext(extra={"o": Spy()})
    for source in (
        "{{ .Extra.o }}",
        "{{ .Extra.o.anything }}",
        "{{ .Extra.o.__class__ }}",
        '{{ .Extra.o.Get "x" }}',
        "{{ .Extra.o | toJson }}",
        '{{ printf "%v %s %d" .Extra.o .Extra.o .Extra.o }}',
        "{{ index .Extra.o 0 }}",
        "{{ len .Extra.o }}",
    ):
        compile_template(source).render(context)
    assert calls == []


@pytest.mark.parametrize(
    "source",
    [
        "{{ .Extra.__class__ }}",
        "{{ .Extra.__init__.__globals__ }}",
        "{{ .Extra.items }}",
        "{{ .Extra.keys }}",
        '{{ .Extra.get "iss" }}',
        "{{ (.Extra).__dict__ }}",
        "{{ $.Extra.copy }}",
    ],
)
def test_dunder_and_method_names_are_just_absent_keys(source: str) -> None:
    assert render(source) == ""


@pytest.mark.parametrize(
    "source",
    [
        "{{ .__class__ }}",
        "{{ .MatchContext.__class__ }}",
        "{{ .MatchContext.URL.query }}",
        "{{ .MatchContext.URL.__init__ }}",
        "{{ .subject }}",
        "{{ .match }}",
    ],
)
def test_python_attribute_names_on_the_session_are_refused_at_load(source: str) -> None:
    with pytest.raises(TemplateError, match="unknown field"):
        compile_template(source)


def test_python_names_on_header_maps_are_header_keys() -> None:
    # http.Header is a map: other names are keys, never Python attributes.
    assert render("{{ .MatchContext.Header.source }}") == "[]"
    assert render("{{ .MatchContext.Header.__class__ }}") == "[]"


def test_render_is_repeatable_and_keeps_no_state_between_renders() -> None:
    template = compile_template(
        "{{ $c := 0 }}{{ range .Extra.l }}{{ $c = add $c 1 }}{{ end }}{{ $c }}"
    )
    assert template.render(TemplateContext(extra={"l": [1, 2]})) == "2"
    assert template.render(TemplateContext(extra={"l": [1, 2, 3]})) == "3"
    assert template.render(TemplateContext()) == "0"


def test_deep_data_prints_empty_instead_of_failing() -> None:
    deep: dict[str, object] = {}
    node = deep
    for _ in range(500):
        child: dict[str, object] = {}
        node["a"] = child
        node = child
    context = TemplateContext(extra=deep)
    assert compile_template("{{ .Extra }}").render(context) == ""
    assert compile_template('{{ printf "%v" .Extra }}').render(context) == ""
    as_json = compile_template("{{ .Extra | toJson }}").render(context)
    assert as_json == "" or json.loads(as_json) == deep
    assert compile_template("{{ .Extra.a.a.a | len }}").render(context) == "1"
    node["x"] = 1.5  # floats take the slower path, which stops at 64 levels
    assert compile_template("{{ .Extra | toJson }}").render(context) == ""


JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
JSON_DATA = st.recursive(
    JSON_LEAVES,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=25,
)
TEMPLATES = [compile_template(source) for source, _ in ((c[1], c[2]) for c in SUPPORTED)] + [
    compile_template(source) for source in ABSENT
]


@settings(max_examples=200, deadline=None)
@given(extra=st.dictionaries(st.text(max_size=10), JSON_DATA, max_size=6), subject=st.text())
def test_rendering_never_raises_on_arbitrary_session_data(
    extra: dict[str, object], subject: str
) -> None:
    context = TemplateContext(subject=subject, extra=extra)
    for template in TEMPLATES:
        assert isinstance(template.render(context), str)


@settings(max_examples=200, deadline=None)
@given(value=JSON_DATA)
def test_to_json_round_trips_arbitrary_data(value: object) -> None:
    out = compile_template("{{ .Extra.v | toJson }}").render(TemplateContext(extra={"v": value}))
    # Go writes floats below 1e21 without an exponent; both read back as the same float.
    assert json.loads(out, parse_int=float) == json.loads(json.dumps(value), parse_int=float)


@settings(max_examples=200, deadline=None)
@given(text=st.text())
def test_template_text_never_reaches_python(text: str) -> None:
    # Any text is either refused at load or renders; nothing else can happen.
    try:
        template = compile_template(text)
    except TemplateError as error:
        assert "\n" not in str(error)
        return
    assert isinstance(template.render(CONTEXT), str)


@settings(max_examples=100, deadline=None)
@given(value=st.text())
def test_quoted_values_cannot_break_out_of_a_json_string(value: str) -> None:
    out = compile_template('{"v": {{ .Extra.v | toJson }}}').render(
        TemplateContext(extra={"v": value})
    )
    expected = value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    assert json.loads(out) == {"v": expected}


# JSON mode (id_token claims, remote_json payloads): a user who sets their own traits
# must not be able to end a JSON string and add claims or change a permission check.
INJECTIONS = [
    'x", "admin": true, "y": "',
    'x\\", "admin": true, "z": "',
    "x\\",
    'x"}, {"namespace": "admin',
    "line\nbreak",
    "tab\tand\u2028separator\x00nul",
    'é✓ "quoted" \\back\\slash',
]
JSON_TEMPLATES = [
    '{"aud": ["a"], "name": "{{ print .Extra.name }}"}',
    '{"name": "{{ .Extra.name }}", "sub": "{{ print .Subject }}"}',
    '{"name": "prefix-{{ .Extra.name | lower }}-suffix"}',
    '{"name": "{{ printf "%s:%s" .Extra.name .Subject }}"}',
    '{"names": [{{ range $i, $n := .Extra.names }}{{ if $i }},{{ end }}"{{ $n }}"{{ end }}]}',
    '{"name": "{{ if .Extra.name }}{{ .Extra.name }}{{ else }}none{{ end }}"}',
    '{"name": "{{ with .Extra.name }}{{ . }}{{ end }}"}',
]


@pytest.mark.parametrize("value", INJECTIONS)
@pytest.mark.parametrize("source", JSON_TEMPLATES)
def test_json_mode_values_cannot_leave_their_string(source: str, value: str) -> None:
    context = TemplateContext(subject="s", extra={"name": value, "names": [value, value]})
    parsed = json.loads(compile_template(source, json=True).render(context))
    assert set(parsed) <= {"aud", "name", "names", "sub"}
    strings = [*parsed.get("names", []), *([parsed["name"]] if "name" in parsed else [])]
    assert strings
    assert all(value in s or value.lower() in s for s in strings)


def test_without_json_mode_the_same_value_adds_a_claim_as_in_oathkeeper() -> None:
    source = '{"name": "{{ print .Extra.name }}"}'
    context = TemplateContext(extra={"name": INJECTIONS[0]})
    assert json.loads(compile_template(source).render(context))["admin"] is True
    assert "admin" not in json.loads(compile_template(source, json=True).render(context))


def test_json_mode_leaves_actions_outside_strings_alone() -> None:
    source = '{"session": {{ .Extra | toJson }}, "n": {{ .Extra.n }}, "s": "{{ .Extra.s }}"}'
    context = TemplateContext(extra={"n": 3, "s": "a<b>&c"})
    assert compile_template(source, json=True).render(context) == (
        '{"session": {"n":3,"s":"a\\u003cb\\u003e\\u0026c"}, "n": 3, "s": "a<b>&c"}'
    )


def test_json_mode_falls_back_where_branches_disagree() -> None:
    source = '{{ if .Subject }}"{{ end }}{{ .Subject }}'
    context = TemplateContext(subject='a"')
    assert compile_template(source, json=True).render(context) == '"a"'


@settings(max_examples=200, deadline=None)
@given(value=st.text())
def test_json_mode_prints_plain_values_exactly_as_without_it(value: str) -> None:
    source = '{"a": "{{ .Extra.v }}", "b": [{{ range .Extra.l }}"{{ . }}",{{ end }}"end"]}'
    context = TemplateContext(extra={"v": value, "l": [value]})
    raw = compile_template(source).render(context)
    safe = compile_template(source, json=True).render(context)
    if not any(ch in value for ch in '"\\') and all(
        ord(ch) >= 0x20 and ch not in "\u2028\u2029" and not 0xD800 <= ord(ch) <= 0xDFFF
        for ch in value
    ):
        assert safe == raw
    assert json.loads(safe)["a"] == value.encode("utf-16", "surrogatepass").decode(
        "utf-16", "replace"
    )


@settings(max_examples=300, deadline=None)
@given(value=JSON_DATA | st.lists(st.text(alphabet='<>&\u2028"\\\x00\ud800é', max_size=5)))
def test_to_json_fast_path_writes_what_the_go_encoder_writes(value: object) -> None:
    fast = template_module._to_json(value)
    assert fast == template_module._go_json(value)


def test_request_headers_straight_from_the_wsgi_environ() -> None:
    environ = {"HTTP_X_API_KEY": "k1", "HTTP_AUTHORIZATION": "Bearer t", "CONTENT_TYPE": "a/b"}
    context = TemplateContext(match=MatchContext(header=EnvironHeaders(environ)))
    assert render('{{ .MatchContext.Header.Get "x-api-key" }}', context) == "k1"
    assert render("{{ .MatchContext.Header | toJson }}", context) == (
        '{"Authorization":["Bearer t"],"Content-Type":["a/b"],"X-Api-Key":["k1"]}'
    )


# werkzeug refuses line breaks in header values itself.
HEADER_TEXT = st.text(st.characters(blacklist_characters="\r\n"), max_size=8)
HEADER_TEMPLATES = [
    compile_template(source)
    for source in (
        "{{ .MatchContext.Header }}",
        "{{ .MatchContext.Header | toJson }}",
        '{{ .MatchContext.Header.Get "a" }}{{ .MatchContext.Header.Values "b" }}',
        "{{ .MatchContext.URL }}|{{ .MatchContext.URL.Query }}|{{ .MatchContext.URL.Hostname }}",
        '{{ .MatchContext.URL.Query.Get "a" }}{{ .MatchContext.URL | toJson }}',
        "{{ range $k, $v := .MatchContext.Header }}{{ $k }}{{ $v }}{{ end }}",
        '{{ printf "%v %s %q" .MatchContext .MatchContext.URL .MatchContext.Header }}',
        "{{ . | toJson }}{{ . }}",
    )
]


@settings(max_examples=200, deadline=None)
@given(
    headers=st.lists(st.tuples(HEADER_TEXT.filter(bool), HEADER_TEXT), max_size=4),
    host=st.text(max_size=12),
    path=st.text(max_size=12),
    raw_query=st.text(max_size=20),
    groups=st.lists(st.text(max_size=5), max_size=3),
)
def test_rendering_never_raises_on_arbitrary_request_data(
    headers: list[tuple[str, str]], host: str, path: str, raw_query: str, groups: list[str]
) -> None:
    match = MatchContext(
        regexp_capture_groups=tuple(groups),
        url=RequestURL("https", host, path, raw_query),
        method="GET",
        header=Headers(headers),
    )
    context = TemplateContext(subject="s", header=Headers(headers), match=match)
    for template in HEADER_TEMPLATES:
        assert isinstance(template.render(context), str)
