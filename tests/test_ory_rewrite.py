"""Rewriting of Ory's Set-Cookie, Location and bodies onto the public domain."""

from __future__ import annotations

import gzip
import re
import zlib
from itertools import pairwise
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ory_wsgi.ory.rewrite import OryRewriter

ORY = "https://ory.example.com"
PUBLIC = "https://app.example.com"
PUBLIC_ORY = PUBLIC + "/.ory"
WELCOME_TARGET = "https://app.example.com/dashboard"

SESSION_COOKIE = (
    "ory_kratos_session=MTY4NzQ1NjM0MXxEdi1CQkFFQ180SUFBUkFCRUFBQVJfLUNBQUV=; Path=/; "
    "Domain=ory.example.com; Expires=Thu, 01 Jan 2030 00:00:01 GMT; Max-Age=86399; "
    "HttpOnly; Secure; SameSite=Lax"
)
CSRF_COOKIE = (
    "csrf_token_6f1b0f5a8c0e2d1f3a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9012="
    "ZmFrZS1jc3JmLXRva2VuLXZhbHVl; Path=/; Domain=ory.example.com; Max-Age=31536000; "
    "HttpOnly; Secure; SameSite=Lax"
)
LOGOUT_COOKIE = (
    "ory_kratos_session=; Path=/; Expires=Thu, 01 Jan 1970 00:00:01 GMT; Max-Age=0; "
    "HttpOnly; SameSite=Lax"
)


@pytest.fixture(scope="module")
def https_rewriter() -> OryRewriter:
    return OryRewriter(ORY, PUBLIC, default_redirect_url=WELCOME_TARGET)


@pytest.fixture(scope="module")
def http_rewriter() -> OryRewriter:
    return OryRewriter(ORY, "http://localhost:4000")


def attributes(cookie: str) -> list[str]:
    return cookie.split(";")[1:]


# -- Set-Cookie -----------------------------------------------------------------------


def test_session_cookie_loses_ory_domain_and_keeps_everything_else(
    https_rewriter: OryRewriter,
) -> None:
    assert https_rewriter.rewrite_set_cookie(SESSION_COOKIE) == SESSION_COOKIE.replace(
        " Domain=ory.example.com;", ""
    )


def test_csrf_cookie_loses_ory_domain(https_rewriter: OryRewriter) -> None:
    assert https_rewriter.rewrite_set_cookie(CSRF_COOKIE) == CSRF_COOKIE.replace(
        " Domain=ory.example.com;", ""
    )


def test_cookie_domain_replaces_ory_domain_in_place() -> None:
    rewriter = OryRewriter(ORY, PUBLIC, cookie_domain="example.com")
    assert rewriter.rewrite_set_cookie(SESSION_COOKIE) == SESSION_COOKIE.replace(
        "Domain=ory.example.com", "Domain=example.com"
    )


def test_cookie_domain_is_added_to_host_only_cookie() -> None:
    rewriter = OryRewriter(ORY, PUBLIC, cookie_domain="example.com")
    assert rewriter.rewrite_set_cookie("a=b; Path=/; Secure") == (
        "a=b; Path=/; Secure; Domain=example.com"
    )


def test_host_prefixed_cookie_never_gets_a_domain() -> None:
    rewriter = OryRewriter(ORY, PUBLIC, cookie_domain="example.com")
    assert rewriter.rewrite_set_cookie("__Host-x=1; Path=/; Domain=ory.example.com; Secure") == (
        "__Host-x=1; Path=/; Secure"
    )


def test_domain_attribute_name_is_matched_in_any_case(https_rewriter: OryRewriter) -> None:
    assert https_rewriter.rewrite_set_cookie("a=b; dOmAiN=ory.example.com; Secure") == (
        "a=b; Secure"
    )


def test_secure_is_added_on_https_public_url(https_rewriter: OryRewriter) -> None:
    assert https_rewriter.rewrite_set_cookie(LOGOUT_COOKIE) == LOGOUT_COOKIE + "; Secure"


def test_secure_is_not_doubled_on_https_public_url(https_rewriter: OryRewriter) -> None:
    cookie = "a=b; Path=/; secure; HttpOnly"
    assert https_rewriter.rewrite_set_cookie(cookie) == cookie


def test_secure_goes_before_a_trailing_semicolon(https_rewriter: OryRewriter) -> None:
    assert https_rewriter.rewrite_set_cookie("a=b; Path=/;") == "a=b; Path=/; Secure;"


def test_secure_is_dropped_on_http_public_url(http_rewriter: OryRewriter) -> None:
    assert http_rewriter.rewrite_set_cookie(SESSION_COOKIE) == SESSION_COOKIE.replace(
        " Domain=ory.example.com;", ""
    ).replace(" Secure;", "")


def test_samesite_none_becomes_lax_on_http(http_rewriter: OryRewriter) -> None:
    assert http_rewriter.rewrite_set_cookie("a=b; Path=/; SameSite=None; Secure; HttpOnly") == (
        "a=b; Path=/; SameSite=Lax; HttpOnly"
    )


def test_samesite_none_stays_on_https(https_rewriter: OryRewriter) -> None:
    cookie = "a=b; Path=/; SameSite=None; Secure"
    assert https_rewriter.rewrite_set_cookie(cookie) == cookie


def test_samesite_strict_stays_on_http(http_rewriter: OryRewriter) -> None:
    cookie = "a=b; Path=/; SameSite=Strict"
    assert http_rewriter.rewrite_set_cookie(cookie) == cookie


def test_untouched_cookie_is_returned_as_is(http_rewriter: OryRewriter) -> None:
    cookie = "a=b;Path=/;  Max-Age=5 ;HttpOnly;Unknown=x,y"
    assert http_rewriter.rewrite_set_cookie(cookie) is cookie


def test_unknown_attributes_and_spacing_survive_a_rewrite(http_rewriter: OryRewriter) -> None:
    cookie = "a=b;Path=/;  Domain=ory.example.com ;Priority=High;  Partitioned"
    assert http_rewriter.rewrite_set_cookie(cookie) == "a=b;Path=/;Priority=High;  Partitioned"


# -- Location -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        (
            "https://ory.example.com/self-service/login/browser?return_to=x",
            PUBLIC_ORY + "/self-service/login/browser?return_to=x",
        ),
        ("HTTPS://Ory.Example.COM/ui/login?flow=1", PUBLIC_ORY + "/ui/login?flow=1"),
        ("https://ory.example.com:443/ui/login", PUBLIC_ORY + "/ui/login"),
        ("https://ory.example.com", PUBLIC_ORY),
        ("https://ory.example.com?x=1#f", PUBLIC_ORY + "?x=1#f"),
    ],
)
def test_absolute_ory_location_moves_under_public_ory(
    https_rewriter: OryRewriter, location: str, expected: str
) -> None:
    assert https_rewriter.rewrite_location(location, "/self-service/login/browser") == expected


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        (
            "../self-service/login/browser?return_to=https%3A%2F%2Fapp.example.com%2F",
            PUBLIC_ORY + "/self-service/login/browser?return_to=https%3A%2F%2Fapp.example.com%2F",
        ),
        ("/self-service/registration/browser", PUBLIC_ORY + "/self-service/registration/browser"),
        ("registration?flow=2", PUBLIC_ORY + "/ui/registration?flow=2"),
        ("?flow=3", PUBLIC_ORY + "/ui/login?flow=3"),
        ("./", PUBLIC_ORY + "/ui/"),
    ],
)
def test_relative_location_is_resolved_against_ory_request_path(
    https_rewriter: OryRewriter, location: str, expected: str
) -> None:
    assert https_rewriter.rewrite_location(location, "/ui/login") == expected


def test_relative_location_from_ory_root(https_rewriter: OryRewriter) -> None:
    assert https_rewriter.rewrite_location("ui/login", "/") == PUBLIC_ORY + "/ui/login"


@pytest.mark.parametrize(
    "location",
    [
        "/ui/welcome",
        "/welcome",
        "https://ory.example.com/ui/welcome",
        "welcome",
        "https://app.example.com/.ory/ui/welcome",
        "https://APP.example.com:443/.ory/welcome?x=1",
    ],
)
def test_welcome_location_becomes_default_redirect_url(
    https_rewriter: OryRewriter, location: str
) -> None:
    assert https_rewriter.rewrite_location(location, "/ui/login") == WELCOME_TARGET


def test_welcome_location_stays_under_ory_without_default_redirect_url(
    http_rewriter: OryRewriter,
) -> None:
    assert http_rewriter.rewrite_location("/ui/welcome", "/ui/login") == (
        "http://localhost:4000/.ory/ui/welcome"
    )


def test_public_location_other_than_welcome_is_untouched(https_rewriter: OryRewriter) -> None:
    location = "https://app.example.com/members/../x"
    assert https_rewriter.rewrite_location(location, "/ui/login") == location


@pytest.mark.parametrize(
    "location",
    [
        "https://evil.com/ui/login",
        "http://ory.example.com/ui/login",
        "https://ory.example.com:8443/ui/login",
        "https://ory.example.com.evil.com/",
        "https://ory.example.comevil.com/",
        "https://ory.example.com@evil.com/",
        "https://ory.example.com:443@evil.com/",
        "https://user@ory.example.com/",
        "//evil.com/x",
        "///evil.com/x",
        "\\\\evil.com/x",
        "/\\evil.com/x",
        "\\/evil.com",
        " //evil.com",
        "/\t/evil.com",
        "http:evil.com",
        "https://evil.com\\@ory.example.com/",
        "javascript:alert(document.domain)",
        "data:text/html,hi",
        "",
    ],
)
def test_foreign_or_crafted_location_is_untouched(
    https_rewriter: OryRewriter, location: str
) -> None:
    assert https_rewriter.rewrite_location(location, "/ui/login") == location


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("https://ory.example.com/../../admin", PUBLIC_ORY + "/admin"),
        ("/%2e%2e/%2E./admin", PUBLIC_ORY + "/admin"),
        ("/%2e%2e/%2E%2E/admin", PUBLIC_ORY + "/admin"),
        ("https://ory.example.com/ui/%2e%2e/%2e%2e/%2e%2e/admin", PUBLIC_ORY + "/admin"),
        ("%2e%2e/%2e%2e/%2e%2e/admin?x=1", PUBLIC_ORY + "/admin?x=1"),
        ("/ui/%2E", PUBLIC_ORY + "/ui/"),
        ("../../../../admin", PUBLIC_ORY + "/admin"),
        ("https://ory.example.com\\@evil.com", PUBLIC_ORY + "/@evil.com"),
        ("/..\\..\\admin", PUBLIC_ORY + "/admin"),
        ("//ory.example.com/x", PUBLIC_ORY + "/x"),
        ("https:evil.com", PUBLIC_ORY + "/ui/evil.com"),
    ],
)
def test_crafted_ory_location_stays_under_public_ory(
    https_rewriter: OryRewriter, location: str, expected: str
) -> None:
    assert https_rewriter.rewrite_location(location, "/ui/login") == expected


def test_ory_under_a_path_maps_only_that_path() -> None:
    rewriter = OryRewriter("https://id.example.com/kratos/", PUBLIC)
    assert rewriter.rewrite_location("https://id.example.com/kratos/ui/login", "/") == (
        PUBLIC_ORY + "/ui/login"
    )


def test_ory_under_a_path_resolves_relative_location_under_it() -> None:
    rewriter = OryRewriter("https://id.example.com/kratos", PUBLIC)
    assert rewriter.rewrite_location("../self-service/x", "/ui/login") == (
        PUBLIC_ORY + "/self-service/x"
    )


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("https://id.example.com/kratos/%2e%2e/admin", "https://id.example.com/admin"),
        ("https://id.example.com/kratos/ui/%2e%2e/x", PUBLIC_ORY + "/x"),
        ("/kratos/%2E%2E/%2e%2e/admin", "https://id.example.com/admin"),
        ("%2e%2e/%2e%2e/%2e%2e/admin", "https://id.example.com/admin"),
    ],
)
def test_ory_under_a_path_resolves_percent_encoded_dot_segments(
    location: str, expected: str
) -> None:
    """Dots written only as `%2e` are resolved as browsers resolve them: the result is
    under `<public URL>/.ory`, or Ory's own URL, never a path that climbs out of `/.ory`."""
    rewriter = OryRewriter("https://id.example.com/kratos", PUBLIC)
    assert rewriter.rewrite_location(location, "/ui/login") == expected


def test_ory_under_a_path_leaves_location_outside_it_on_ory() -> None:
    rewriter = OryRewriter("https://id.example.com/kratos", PUBLIC)
    assert rewriter.rewrite_location("/other", "/ui/login") == "https://id.example.com/other"


def test_ory_under_a_path_does_not_match_a_longer_segment() -> None:
    rewriter = OryRewriter("https://id.example.com/kratos", PUBLIC)
    location = "https://id.example.com/kratosx/ui"
    assert rewriter.rewrite_location(location, "/") == location


def test_ory_on_default_port_written_out_matches_plain_host() -> None:
    rewriter = OryRewriter("http://kratos.local:80", "http://localhost:4000")
    assert rewriter.rewrite_location("http://kratos.local/ui", "/") == (
        "http://localhost:4000/.ory/ui"
    )


def test_ory_url_must_be_http() -> None:
    with pytest.raises(ValueError, match="ory_url"):
        OryRewriter("ftp://ory.example.com", PUBLIC)


# -- Response headers -----------------------------------------------------------------


def test_response_headers_rewrites_each_set_cookie_apart_and_in_order(
    https_rewriter: OryRewriter,
) -> None:
    headers = [
        ("Content-Type", "text/html"),
        ("Set-Cookie", SESSION_COOKIE),
        ("location", "../self-service/login/browser"),
        ("set-cookie", CSRF_COOKIE),
        ("X-Other", "https://ory.example.com/x"),
    ]
    assert https_rewriter.rewrite_response_headers(headers, "/ui/login") == [
        ("Content-Type", "text/html"),
        ("Set-Cookie", SESSION_COOKIE.replace(" Domain=ory.example.com;", "")),
        ("location", PUBLIC_ORY + "/self-service/login/browser"),
        ("set-cookie", CSRF_COOKIE.replace(" Domain=ory.example.com;", "")),
        ("X-Other", "https://ory.example.com/x"),
    ]


# -- Bodies ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "text/html; charset=UTF-8",
        "text/css",
        "text/plain",
        "application/javascript",
        "Application/Problem+JSON",
        "application/xhtml+xml",
    ],
)
def test_textual_content_types(https_rewriter: OryRewriter, content_type: str) -> None:
    assert https_rewriter.is_textual(content_type)


@pytest.mark.parametrize(
    "content_type",
    ["image/png", "application/octet-stream", "font/woff2", "", "application/jsonx"],
)
def test_binary_content_types(https_rewriter: OryRewriter, content_type: str) -> None:
    assert not https_rewriter.is_textual(content_type)


def test_gzip_json_body_is_rewritable(https_rewriter: OryRewriter) -> None:
    assert https_rewriter.is_rewritable("application/json; charset=utf-8", "gzip")


def test_brotli_body_is_not_rewritable(https_rewriter: OryRewriter) -> None:
    assert not https_rewriter.is_rewritable("application/json", "br")


def rewrite(rewriter: OryRewriter, chunks: list[bytes], encoding: str = "") -> bytes:
    return b"".join(rewriter.rewrite_body(chunks, "application/json", encoding))


FLOW = (
    b'{"ui":{"action":"https://ory.example.com/self-service/login?flow=1",'
    b'"nodes":[{"href":"https:\\/\\/ory.example.com\\/ui\\/recovery"}]},'
    b'"foreign":"https://ory.example.com.evil.com/x","port":"https://ory.example.com:4433/"}'
)
FLOW_REWRITTEN = (
    b'{"ui":{"action":"https://app.example.com/.ory/self-service/login?flow=1",'
    b'"nodes":[{"href":"https:\\/\\/app.example.com\\/.ory\\/ui\\/recovery"}]},'
    b'"foreign":"https://ory.example.com.evil.com/x","port":"https://ory.example.com:4433/"}'
)


def test_body_ory_url_is_replaced(https_rewriter: OryRewriter) -> None:
    assert rewrite(https_rewriter, [FLOW]) == FLOW_REWRITTEN


def test_body_match_split_across_every_chunk_boundary(https_rewriter: OryRewriter) -> None:
    for size in range(1, 40):
        chunks = [FLOW[i : i + size] for i in range(0, len(FLOW), size)]
        assert rewrite(https_rewriter, chunks) == FLOW_REWRITTEN, size


@pytest.mark.parametrize(
    "body",
    [b'"https:\\/\\/ory.example.com:443.evil.com"', b'"https://ory.example.com@evil.com"'],
)
def test_body_url_on_another_host_is_untouched_at_every_cut(
    https_rewriter: OryRewriter, body: bytes
) -> None:
    for cut in range(len(body) + 1):
        assert rewrite(https_rewriter, [body[:cut], body[cut:]]) == body, cut


def test_body_ending_in_ory_url_is_replaced(https_rewriter: OryRewriter) -> None:
    assert (
        rewrite(https_rewriter, [b"x https://ory.exa", b"mple.com"]) == b"x " + PUBLIC_ORY.encode()
    )


def test_body_with_default_port_spelled_out(https_rewriter: OryRewriter) -> None:
    assert rewrite(https_rewriter, [b'"https://ory.example.com:443/x"']) == (
        b'"https://app.example.com/.ory/x"'
    )


def test_binary_content_type_body_passes_untouched(https_rewriter: OryRewriter) -> None:
    body = [b"https://ory.example.com/", b"x"]
    assert list(https_rewriter.rewrite_body(body, "image/svg", "")) == body


def test_unknown_encoding_body_passes_untouched(https_rewriter: OryRewriter) -> None:
    body = [b"https://ory.example.com/", b"x"]
    assert list(https_rewriter.rewrite_body(body, "text/html", "br")) == body


def test_gzip_body_round_trip(https_rewriter: OryRewriter) -> None:
    packed = gzip.compress(FLOW * 50)
    chunks = [packed[i : i + 97] for i in range(0, len(packed), 97)]
    out = rewrite(https_rewriter, chunks, "gzip")
    assert gzip.decompress(out) == FLOW_REWRITTEN * 50


def test_gzip_body_of_two_members_becomes_one(https_rewriter: OryRewriter) -> None:
    packed = gzip.compress(FLOW) + gzip.compress(FLOW)
    assert gzip.decompress(rewrite(https_rewriter, [packed], "gzip")) == FLOW_REWRITTEN * 2


def test_gzip_bomb_inflates_in_bounded_pieces(https_rewriter: OryRewriter) -> None:
    packed = gzip.compress(b" " * (32 * 1024 * 1024))
    pieces = https_rewriter.rewrite_body([packed], "text/plain", "gzip")
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    total = sum(len(inflate.decompress(piece)) for piece in pieces)
    assert total == 32 * 1024 * 1024


def test_body_labelled_gzip_that_is_not_passes_untouched(https_rewriter: OryRewriter) -> None:
    body = [b"https://ory.example.com/ plain", b" text"]
    assert rewrite(https_rewriter, body, "gzip") == b"".join(body)


def test_empty_gzip_body_stays_empty(https_rewriter: OryRewriter) -> None:
    assert rewrite(https_rewriter, [], "gzip") == b""


# -- Properties -----------------------------------------------------------------------

REWRITERS = [
    OryRewriter(ORY, PUBLIC),
    OryRewriter(ORY, PUBLIC, cookie_domain="example.com", default_redirect_url=WELCOME_TARGET),
    OryRewriter("http://127.0.0.1:4433", "http://localhost:4000"),
    OryRewriter("https://id.example.com/kratos", "http://localhost:4000", cookie_domain="x.y"),
]
rewriters = st.sampled_from(REWRITERS)
header_text = st.text(st.characters(codec="utf-8"), max_size=200)
# Fragments that make crafted URLs likely: hosts, separators, dot segments, userinfo.
url_piece = st.sampled_from(
    [
        "https:",
        "http:",
        "HTTPS:",
        "//",
        "/",
        "\\",
        "ory.example.com",
        "ORY.example.com",
        "127.0.0.1:4433",
        "id.example.com",
        "/kratos",
        "app.example.com",
        "localhost:4000",
        "evil.com",
        "@",
        ":443",
        ":80",
        "..",
        ".",
        "%2e",
        "?",
        "#",
        "\t",
        " ",
        "ui",
        "welcome",
        "/.ory",
    ]
)
crafted_url = st.lists(st.one_of(url_piece, header_text), max_size=12).map("".join)
request_path = st.sampled_from(["/", "/ui/login", "/self-service/login/browser", "", "x/../.."])
FIXED_ATTRIBUTES = {"domain", "secure", "samesite"}
DOT_SEGMENT = re.compile(r"(?:^|/)(?:\.|%2e){1,2}(?:/|$)", re.IGNORECASE)


@given(rewriters, header_text)
def test_set_cookie_never_raises_and_keeps_name_value(rewriter: OryRewriter, value: str) -> None:
    assert rewriter.rewrite_set_cookie(value).split(";")[0] == value.split(";")[0]


cookie_attribute = st.one_of(
    header_text.filter(lambda s: ";" not in s),
    st.sampled_from(
        [
            " Path=/",
            " Domain=ory.example.com",
            " Expires=Thu, 01 Jan 2030 00:00:01 GMT",
            " Max-Age=0",
            " HttpOnly",
            " Secure",
            " SameSite=None",
            " samesite = none ",
            "SECURE",
            " Priority=High",
        ]
    ),
)


@given(rewriters, st.lists(cookie_attribute, max_size=8))
def test_set_cookie_keeps_other_attributes_byte_for_byte_in_order(
    rewriter: OryRewriter, attrs: list[str]
) -> None:
    cookie = ";".join(["ory_kratos_session=v", *attrs])

    def others(text: str) -> list[str]:
        return [
            a
            for a in attributes(text)
            if a.partition("=")[0].strip().lower() not in FIXED_ATTRIBUTES
        ]

    assert others(rewriter.rewrite_set_cookie(cookie)) == others(cookie)


@given(rewriters, crafted_url, request_path)
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_location_is_untouched_or_ours_never_elsewhere(
    rewriter: OryRewriter, location: str, path: str
) -> None:
    result = rewriter.rewrite_location(location, path)
    if result in (location, WELCOME_TARGET):
        return
    if result == "https://id.example.com" or result.startswith(
        ("https://id.example.com/", "https://id.example.com?", "https://id.example.com#")
    ):
        # Kratos under /kratos: a path outside it (Ory's root too) stays on Ory's own host.
        return
    assert result.startswith(rewriter.public_ory)
    assert result[len(rewriter.public_ory) : len(rewriter.public_ory) + 1] in ("", "/", "?", "#")
    parts = urlsplit(result)
    assert parts.hostname == urlsplit(rewriter.public_ory).hostname
    assert not DOT_SEGMENT.search(parts.path)
    assert "\\" not in parts.path


@given(
    rewriters,
    st.sampled_from(["https", "http"]),
    st.from_regex(r"[a-z0-9-]{1,20}(\.[a-z0-9-]{1,10}){0,3}(:[0-9]{1,5})?", fullmatch=True),
    st.from_regex(r"(/[a-zA-Z0-9._~%-]{0,10}){0,4}(\?[ -~]{0,20})?", fullmatch=True),
)
def test_foreign_location_is_never_made_ours(
    rewriter: OryRewriter, scheme: str, authority: str, path: str
) -> None:
    foreign = f"{scheme}://evil-{authority}{path}"
    assert rewriter.rewrite_location(foreign, "/ui/login") == foreign


@given(rewriters, header_text, header_text)
def test_response_headers_never_raise(rewriter: OryRewriter, value: str, path: str) -> None:
    headers = [("Set-Cookie", value), ("Location", value), ("X-Any", value)]
    out = rewriter.rewrite_response_headers(headers, path)
    assert [name for name, _ in out] == ["Set-Cookie", "Location", "X-Any"]
    assert out[2] == ("X-Any", value)


body_piece = st.one_of(
    st.binary(max_size=30),
    st.sampled_from(
        [
            b"https://ory.example.com",
            b"https:\\/\\/ory.example.com",
            b"https://ory.example.com:443/",
            b"https:\\/\\/ory.example.com:443",
            b"http://127.0.0.1:4433",
            b"https://id.example.com/kratos",
            b".evil",
            b"/x",
            b"@",
        ]
    ),
)
bodies = st.lists(body_piece, max_size=12).map(b"".join)


def split(body: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(body), *(c % (len(body) + 1) for c in cuts)})
    return [body[a:b] for a, b in pairwise(points)]


@given(rewriters, bodies, st.lists(st.integers(min_value=0), max_size=8))
def test_body_rewrite_does_not_depend_on_chunking(
    rewriter: OryRewriter, body: bytes, cuts: list[int]
) -> None:
    assert rewrite(rewriter, split(body, cuts)) == rewrite(rewriter, [body])


@given(rewriters, st.binary(max_size=300), st.lists(st.integers(min_value=0), max_size=8))
def test_body_without_ory_url_is_byte_for_byte(
    rewriter: OryRewriter, body: bytes, cuts: list[int]
) -> None:
    body = body.replace(b"ory.example.com", b"").replace(b"127.0.0.1:4433", b"")
    body = body.replace(b"id.example.com", b"")
    assert rewrite(rewriter, split(body, cuts)) == body


@given(rewriters, bodies, st.lists(st.integers(min_value=0), max_size=8))
def test_gzip_body_inflates_to_the_identity_rewrite(
    rewriter: OryRewriter, body: bytes, cuts: list[int]
) -> None:
    packed = gzip.compress(body)
    out = rewrite(rewriter, split(packed, cuts), "gzip")
    assert gzip.decompress(out) == rewrite(rewriter, [body])
