"""The path normaliser and the rule matcher, example by example and by property."""

from __future__ import annotations

import re
from urllib.parse import unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ory_wsgi.errors import BadRequest
from ory_wsgi.paths import PathRules, lenient_match_paths, normalise_path
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
        ("/MEMBERS", "/members"),
        ("/members;jsessionid=1/y", "/members/y"),
        ("/members.", "/members"),
        ("/members. /x", "/members/x"),
    ],
)
def test_match_path_ignores_case_params_and_trailing_dots(raw: str, match: str) -> None:
    assert normalise_path(raw).match == match


@pytest.mark.parametrize(
    "raw", ["/a%2Fb", "/a%5cb", "/a\\b", "/a%00", "/a%23b", "/a%252f", "/%c0%af"]
)
def test_suspicious_spellings_are_flagged(raw: str) -> None:
    assert normalise_path(raw).suspicious


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


TOKENS = [
    "/",
    "members",
    "MEMBERS",
    "Members",
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
    " ",
    "signup",
    "%c0%af",
    "%ef%bc%8f",
    "//",
    "./",
    "../",
]


def app_views(path: str) -> tuple[str, str]:
    """How frameworks read the forwarded path: decoded once, repeated slashes
    merged, params, trailing dots and case ignored; with dot segments resolved
    after decoding (some) and without (werkzeug's router, Django's resolver)."""
    decoded = unquote(path, errors="replace").replace("\\", "/")
    resolved: list[str] = []
    literal: list[str] = []
    for segment in decoded.split("/"):
        bare = segment.split(";", 1)[0]
        if bare == "..":
            if resolved:
                resolved.pop()
            literal.append(bare)
            continue
        bare = bare.rstrip(". ")
        if bare in ("", "."):
            continue
        resolved.append(bare.lower())
        literal.append(bare.lower())
    return "/" + "/".join(resolved), "/" + "/".join(literal)


UNDER_MEMBERS = re.compile(r"^/members(/|$)")
PROTECT_MEMBERS = PathRules([Rule(prefix="/members")], [])


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), min_size=1, max_size=8))
def test_no_spelling_reaches_a_protected_path_unchecked(tokens: list[str]) -> None:
    raw = "/" + "".join(tokens)
    normalised = normalise_path(raw)
    refused = normalised.suspicious and PROTECT_MEMBERS.near_protected(
        normalised.match, *lenient_match_paths(normalised.path)
    )
    if refused or PROTECT_MEMBERS.protected(normalised.match, "GET"):
        return
    for view in app_views(normalised.path):
        assert not UNDER_MEMBERS.match(view), (raw, normalised, view)


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), min_size=1, max_size=8))
def test_normalising_is_idempotent(tokens: list[str]) -> None:
    once = normalise_path("/" + "".join(tokens))
    twice = normalise_path(once.path)
    assert twice.path == once.path
    assert twice.match == once.match


@settings(max_examples=1000, deadline=None)
@given(st.text(min_size=0, max_size=60).map(lambda s: "/" + s))
def test_any_text_normalises_or_is_refused_cleanly(raw: str) -> None:
    result = normalise_path(raw)
    assert result.path.startswith("/")
    assert "//" not in result.path
    assert "/../" not in result.path + "/" and "/./" not in result.path + "/"
