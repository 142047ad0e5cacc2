"""The path normaliser and the rule matcher, example by example and by property."""

from __future__ import annotations

import pytest
from app_readings import served_as_protected
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ory_wsgi.errors import BadRequest
from ory_wsgi.paths import (
    PathRules,
    app_relative_path,
    lenient_match_paths,
    normalise_path,
    wsgi_path,
)
from ory_wsgi.settings import Rule


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ("/members", "/members"),
        ("//members//x", "/members/x"),
        ("/a/../members", "/members"),
        ("/%2e%2e/members", "/members"),
        ("/a/%2E/b/", "/a/b/"),
        ("/~%41%7e", "/~A~"),
        ("/x/%2fy", "/x/%2Fy"),
        ("/members;x=1/y", "/members;x=1/y"),
        ("/../../etc", "/etc"),
        ("/a/b/..", "/a/"),
    ],
)
def test_normalised_path_is_what_is_forwarded(raw: str, path: str) -> None:
    assert normalise_path(raw).path == path


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ("/MEMBERS", "/MEMBERS"),
        ("/members;jsessionid=1/y", "/members/y"),
        ("/members.", "/members"),
        ("/members. /x", "/members/x"),
    ],
)
def test_match_path_ignores_params_and_trailing_dots(raw: str, match: str) -> None:
    assert normalise_path(raw).match == match


@pytest.mark.parametrize(
    "raw", ["/a%2Fb", "/a%5cb", "/a\\b", "/a%00", "/a%23b", "/a%252f", "/%c0%af", "/a%u002fb"]
)
def test_suspicious_spellings_are_flagged(raw: str) -> None:
    assert normalise_path(raw).suspicious


@pytest.mark.parametrize(
    "raw", ["/caf%C3%A9", "/%E2%82%AC/prix", "/%F0%9F%98%80", "/members/%c3%bc", "/plain/path"]
)
def test_valid_utf8_escapes_are_not_suspicious(raw: str) -> None:
    # Only escapes that do not decode as UTF-8 are an attacker's spelling; these are text.
    assert not normalise_path(raw).suspicious


def test_a_path_not_starting_with_slash_is_a_bad_request() -> None:
    with pytest.raises(BadRequest):
        normalise_path("members")


def test_lenient_paths_decode_double_encoding_and_backslashes() -> None:
    assert "/members/x" in lenient_match_paths("/%256dembers%5cx")


def test_lenient_paths_read_decoded_dot_segments_both_ways() -> None:
    assert {"/", "/members/.."} <= set(lenient_match_paths("/members%2f.."))


RULES = PathRules(
    [
        Rule(prefix="/members"),
        Rule(glob="/admin/**"),
        Rule(regex=r"^/api/v\d+/me"),
        Rule(prefix="/write", methods=("POST",)),
    ],
    [Rule(prefix="/members/signup")],
)


@pytest.mark.parametrize(
    ("path", "method", "protected"),
    [
        ("/members", "GET", True),
        ("/members/x", "GET", True),
        ("/membership", "GET", False),
        ("/members/signup", "GET", False),
        ("/members/signup/step2", "GET", False),
        ("/members/signupx", "GET", True),
        ("/admin", "GET", True),
        ("/admin/a/b", "GET", True),
        ("/administrator", "GET", False),
        ("/api/v2/me", "GET", True),
        ("/api/v2/you", "GET", False),
        ("/write", "GET", False),
        ("/write", "POST", True),
    ],
)
def test_most_specific_rule_decides(path: str, method: str, protected: bool) -> None:
    assert (RULES.protected(normalise_path(path).match, method) is not None) is protected


def test_protect_wins_a_tie_with_public() -> None:
    rules = PathRules([Rule(prefix="/x")], [Rule(prefix="/x")])
    assert rules.protected("/x", "GET") is not None


def test_glob_star_stays_within_one_segment() -> None:
    rules = PathRules([Rule(glob="/files/*/secret")], [])
    assert rules.protected("/files/a/secret", "GET")
    assert not rules.protected("/files/a/b/secret", "GET")


def governs(rules: PathRules, raw: str, *methods: str) -> bool:
    return rules.governing(normalise_path(raw), methods or ("GET",)) is not None


@pytest.mark.parametrize(
    "raw",
    [
        "/members/SIGNUP",
        "/members/Signup/x",
        "/members/signup.",
        "/members/signup;x",
        "/members/signup%3B",
        "/members/signup%20",
        "/members/..%3Bx/open",
        "/members%3F",
    ],
)
def test_a_public_exception_opens_only_its_exact_spelling(raw: str) -> None:
    assert governs(RULES, raw)


@pytest.mark.parametrize("raw", ["/members/signup", "/members/signup/", "/members/signup/x;y=1"])
def test_a_public_exception_opens_its_own_paths(raw: str) -> None:
    assert not governs(RULES, raw)


def test_get_rule_covers_head() -> None:
    rules = PathRules([Rule(prefix="/r", methods=("GET",))], [])
    assert governs(rules, "/r", "HEAD")
    assert not governs(rules, "/r", "POST")


def test_method_is_compared_without_case() -> None:
    assert governs(RULES, "/write", "post")


def test_any_claimed_method_counts() -> None:
    assert governs(RULES, "/write", "GET", "POST")


def test_overlong_dot_segments_near_a_protected_path_are_refused() -> None:
    assert RULES.refuses(normalise_path("/open/%c0%ae%c0%ae/members"))
    assert RULES.refuses(normalise_path("/open/%u002e%u002e/members"))
    assert not RULES.refuses(normalise_path("/open/%c0%ae%c0%ae/elsewhere"))


CONTROLS = [f"%{code:02X}" for code in (*range(0x20), 0x7F)]


@pytest.mark.parametrize("control", CONTROLS + [c.lower() for c in CONTROLS])
@pytest.mark.parametrize(
    "template",
    [
        "/members{}",
        "/members{}/x",
        "/members/x{}",
        "/MEMBERS{}",
        "/members%20{}",
        "/members{}%20",
        "/members.{}",
        "/members/signup{}",
        "/members/signup{}/../x",
        "/open/..{}/members",
        "/{}members",
        "/mem{}bers",
        "/admin{}/users",
        "/open/%2e%2e{}/members",
    ],
)
def test_encoded_control_near_a_protected_path_is_refused(template: str, control: str) -> None:
    assert RULES.refuses(normalise_path(template.format(control)))


@pytest.mark.parametrize("raw", ["/members%250A", "/members%25250a", "/members%u000a"])
def test_double_encoded_control_near_a_protected_path_is_refused(raw: str) -> None:
    assert RULES.refuses(normalise_path(raw))


@pytest.mark.parametrize("control", ["%0A", "%0d", "%09", "%00", "%1F", "%7f", "%0D%0A"])
def test_encoded_control_away_from_protected_paths_is_not_refused(control: str) -> None:
    assert normalise_path(f"/open{control}").suspicious
    assert not RULES.refuses(normalise_path(f"/open{control}"))
    assert not RULES.refuses(normalise_path(f"/files/{control}x"))


@pytest.mark.parametrize(
    ("raw", "reading"),
    [
        ("/members%0A", "/members"),
        ("/members%0d%0a", "/members"),
        ("/members%09/x", "/members/x"),
        ("/members%7F", "/members"),
        ("/members%20%0B", "/members"),
    ],
)
def test_lenient_reading_trims_trailing_whitespace_and_controls(raw: str, reading: str) -> None:
    assert reading in normalise_path(raw).views
    assert governs(RULES, raw)


def test_encoded_slash_away_from_protected_paths_is_not_refused() -> None:
    assert not RULES.refuses(normalise_path("/files/a%2Fb"))


def test_mixed_case_public_rule_matches_its_own_spelling() -> None:
    rules = PathRules([Rule(prefix="/Docs")], [Rule(prefix="/Docs/Public")])
    assert not governs(rules, "/Docs/Public/x")
    assert governs(rules, "/docs/public/x")
    assert governs(rules, "/DOCS/private")


TOKENS = [
    "/",
    "members",
    "MEMBERS",
    "Members",
    "signup",
    "SIGNUP",
    "signup.",
    ".",
    "..",
    "%2e",
    "%2E",
    "%2e%2e",
    "%2f",
    "%2F",
    "%252f",
    "%25",
    ";x=1",
    ";",
    "..;",
    "%3b",
    "%3B",
    "%3f",
    "%00",
    "\\",
    "%5c",
    "a",
    "%61",
    "%6d",
    "%6D",
    "~",
    "%7e",
    "%23",
    "%20",
    "%0a",
    "%0D",
    "%09",
    "%7f",
    "%1f",
    " ",
    "%c0%af",
    "%c0%ae",
    "%ef%bc%8f",
    "//",
    "./",
    "../",
]


def protected_for_some_app(path: str) -> bool:
    """Under /members and not the /members/signup exception, case kept or folded."""
    return served_as_protected(path, ["/members"], ["/members/signup"])


MEMBERS_WITH_SIGNUP = PathRules([Rule(prefix="/members")], [Rule(prefix="/members/signup")])


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), min_size=1, max_size=8))
def test_no_spelling_reaches_a_protected_path_unchecked(tokens: list[str]) -> None:
    normalised = normalise_path("/" + "".join(tokens))
    if MEMBERS_WITH_SIGNUP.refuses(normalised):
        return
    if MEMBERS_WITH_SIGNUP.governing(normalised, ("GET",)):
        return
    assert not protected_for_some_app(normalised.path), normalised


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), min_size=1, max_size=8))
def test_normalising_is_idempotent(tokens: list[str]) -> None:
    once = normalise_path("/" + "".join(tokens))
    twice = normalise_path(once.path)
    assert twice.path == once.path
    assert twice.views == once.views


@settings(max_examples=1000, deadline=None)
@given(st.text(min_size=0, max_size=60).map(lambda s: "/" + s))
def test_any_text_normalises_or_is_refused_cleanly(raw: str) -> None:
    result = normalise_path(raw)
    assert result.path.startswith("/")
    assert "//" not in result.path
    assert "/../" not in result.path + "/" and "/./" not in result.path + "/"
    assert all(view.startswith("/") for view in result.views)


SEGMENTS = st.lists(st.sampled_from(["a", "ab", "B", "x-y", "a.b", "Ab"]), min_size=0, max_size=4)


@settings(max_examples=500, deadline=None)
@given(SEGMENTS.filter(bool), SEGMENTS)
def test_prefix_matches_exactly_on_segment_boundaries(prefix: list[str], path: list[str]) -> None:
    rules = PathRules([Rule(prefix="/" + "/".join(prefix))], [])
    lowered = [segment.lower() for segment in path]
    expected = lowered[: len(prefix)] == [segment.lower() for segment in prefix]
    assert (rules.protected("/" + "/".join(path), "GET") is not None) is expected


@settings(max_examples=300, deadline=None)
@given(
    st.permutations(
        [
            Rule(prefix="/members"),
            Rule(glob="/admin/**"),
            Rule(regex=r"^/api/v\d+/me"),
            Rule(prefix="/write", methods=("POST",)),
        ]
    ),
    st.lists(st.sampled_from(TOKENS), min_size=1, max_size=6),
    st.sampled_from(["GET", "POST"]),
)
def test_rule_order_does_not_change_the_decision(
    protect: list[Rule], tokens: list[str], method: str
) -> None:
    normalised = normalise_path("/" + "".join(tokens))
    shuffled = PathRules(protect, [Rule(prefix="/members/signup")])
    assert (shuffled.governing(normalised, (method,)) is None) is (
        RULES.governing(normalised, (method,)) is None
    )


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), min_size=1, max_size=8))
def test_a_public_exception_never_protects_more(tokens: list[str]) -> None:
    normalised = normalise_path("/" + "".join(tokens))
    without = PathRules([Rule(prefix="/members")], [])
    if MEMBERS_WITH_SIGNUP.governing(normalised, ("GET",)):
        assert without.governing(normalised, ("GET",))


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="ab/", min_size=1, max_size=12))
def test_glob_star_never_crosses_a_slash(tail: str) -> None:
    assume("//" not in tail)
    rules = PathRules([Rule(glob="/files/*")], [])
    expected = "/" not in tail
    assert (rules.protected("/files/" + tail, "GET") is not None) is (expected and tail != "")


@pytest.mark.parametrize(
    ("path", "script_name", "relative"),
    [
        ("/app/members", "/app", "/members"),
        ("/app/members", "/app/", "/members"),
        ("/app", "/app", ""),
        ("/app/", "/app", "/"),
        ("/a/b/c", "/a/b", "/c"),
        ("/members", "", "/members"),
        ("/members", "/", "/members"),
        ("/caf%C3%A9/x", "/caf\xc3\xa9", "/x"),  # SCRIPT_NAME is WSGI text (latin-1)
    ],
)
def test_app_relative_path_is_the_path_after_the_mount(
    path: str, script_name: str, relative: str
) -> None:
    assert app_relative_path(path, script_name) == relative


@pytest.mark.parametrize(
    ("path", "script_name"),
    [
        ("/application/members", "/app"),  # a prefix, not a segment
        ("/APP/members", "/app"),  # segments compare exactly
        ("/other/app/members", "/app"),
        ("/app", "/app/members"),
        ("/app/members", "/app/../admin"),
        ("/app/members", "/./app"),
    ],
)
def test_app_relative_path_refuses_a_path_not_under_the_mount(path: str, script_name: str) -> None:
    with pytest.raises(BadRequest):
        app_relative_path(path, script_name)


@pytest.mark.parametrize(
    ("path", "info"),
    [
        ("/members", "/members"),
        ("/a%2Fb", "/a/b"),
        ("/caf%C3%A9", "/caf\xc3\xa9"),
        ("/%25", "/%"),
    ],
)
def test_wsgi_path_decodes_to_latin1_text(path: str, info: str) -> None:
    assert wsgi_path(path) == info
