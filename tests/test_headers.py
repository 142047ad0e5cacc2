"""Headers through the proxy: hop-by-hop both ways, cookies, encodings, X-Forwarded-*."""

from __future__ import annotations

import gzip
import http.client
import json
import threading
from collections.abc import Callable
from urllib.parse import urlsplit

import pytest
from client_claims import CLIENT_IP_CLAIMS, IDENTITY_CLAIMS, claims_in
from servers import Gunicorn, ThreadedServer
from werkzeug.serving import make_server

from ory_wsgi import make_app
from ory_wsgi.headers import TrustedProxies, upstream_headers
from ory_wsgi.identity_headers import CLIENT_IP_KEYS, IDENTITY_KEYS, PROXY_KEYS, strip_claims

DevProxy = Callable[..., ThreadedServer]
PUBLIC = "https://app.example.com"
FORGED = {
    "X-Forwarded-For": "6.6.6.6",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "evil.example",
    "Forwarded": "for=6.6.6.6;proto=https;host=evil.example",
}


def connection(url: str) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    return http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)


def echo_headers(url: str, headers: dict[str, str]) -> dict[str, str]:
    conn = connection(url)
    conn.request("GET", "/echo", headers=headers)
    response = conn.getresponse()
    assert response.status == 200
    seen: dict[str, str] = json.loads(response.read())["headers"]
    conn.close()
    return seen


# -- hop-by-hop -------------------------------------------------------------------------


def test_hop_by_hop_request_headers_never_reach_app(proxy: Gunicorn) -> None:
    seen = echo_headers(
        proxy.url,
        {
            "Connection": "keep-alive",
            "Keep-Alive": "timeout=5",
            "Proxy-Authorization": "Basic c2VjcmV0",
            "Proxy-Connection": "keep-alive",
            "TE": "trailers",
            "Trailer": "X-Checksum",
            "X-Kept": "1",
        },
    )
    dropped = {"Keep-Alive", "Proxy-Authorization", "Proxy-Connection", "Te", "Trailer"}
    assert dropped.isdisjoint(seen)
    assert seen["X-Kept"] == "1"


def test_request_headers_named_in_connection_never_reach_app(proxy: Gunicorn) -> None:
    seen = echo_headers(
        proxy.url,
        {
            "Connection": "keep-alive, X-Private, x-other-private",
            "X-Private": "secret",
            "X-Other-Private": "secret",
            "X-Kept": "1",
        },
    )
    assert "X-Private" not in seen
    assert "X-Other-Private" not in seen
    assert seen["X-Kept"] == "1"


def test_upgrade_request_header_never_reaches_app(
    dev_proxy: DevProxy, upstream: ThreadedServer
) -> None:
    server = dev_proxy(upstream=upstream.url, public_url=PUBLIC)
    seen = echo_headers(server.url, {"Upgrade": "foo/2", "X-Kept": "1"})
    assert "Upgrade" not in seen
    assert seen["X-Kept"] == "1"


def test_hop_by_hop_response_headers_never_reach_client(
    dev_proxy: DevProxy, upstream: ThreadedServer
) -> None:
    # werkzeug serves both sides here: unlike gunicorn, it passes hop-by-hop headers on.
    server = dev_proxy(upstream=upstream.url, public_url=PUBLIC)
    conn = connection(server.url)
    conn.request("GET", "/hop")
    response = conn.getresponse()
    headers = response.getheaders()
    names = {name.lower() for name, _ in headers}
    assert response.read() == b"ok"
    assert {"keep-alive", "proxy-authenticate", "trailer", "upgrade"}.isdisjoint(names)
    assert "x-secret-hop" not in names
    assert [value for name, value in headers if name.lower() == "connection"] == ["close"]
    assert response.getheader("X-Kept") == "1"


# -- Set-Cookie, encodings, bodies ------------------------------------------------------


def test_repeated_set_cookie_kept_intact_and_in_order(proxy: Gunicorn) -> None:
    conn = connection(proxy.url)
    conn.request("GET", "/cookies")
    response = conn.getresponse()
    cookies = [value for name, value in response.getheaders() if name.lower() == "set-cookie"]
    assert cookies == [
        "a=1; Path=/; HttpOnly",
        "b=2; Expires=Thu, 01 Jan 1970 00:00:01 GMT; Path=/",
        "c=3; Domain=app.example.com; SameSite=None; Secure",
    ]
    assert response.getheader("X-Between") == "yes"


def test_gzip_body_passes_undecoded_with_its_content_encoding(proxy: Gunicorn) -> None:
    conn = connection(proxy.url)
    conn.request("GET", "/gzip", headers={"Accept-Encoding": "gzip"})
    response = conn.getresponse()
    body = response.read()
    assert response.getheader("Content-Encoding") == "gzip"
    assert response.getheader("Content-Length") == str(len(body))
    assert body[:2] == b"\x1f\x8b"
    assert gzip.decompress(body) == b"hello compressed world " * 100


def test_head_answer_carries_no_body(proxy: Gunicorn) -> None:
    conn = connection(proxy.url)
    conn.request("HEAD", "/hello")
    head = conn.getresponse()
    assert (head.status, head.getheader("Content-Length"), head.read()) == (200, "5", b"")
    # Any body bytes after the HEAD answer would garble the next answer on the connection.
    conn.request("GET", "/hello")
    assert conn.getresponse().read() == b"hello"


@pytest.mark.parametrize("code", [204, 304])
def test_no_body_status_carries_no_body(proxy: Gunicorn, code: int) -> None:
    conn = connection(proxy.url)
    conn.request("GET", f"/status?code={code}")
    answer = conn.getresponse()
    assert (answer.status, answer.getheader("ETag"), answer.read()) == (code, '"v1"', b"")
    assert answer.getheader("Transfer-Encoding") is None
    conn.request("GET", "/hello")
    assert conn.getresponse().read() == b"hello"


def test_upstream_status_and_reason_reach_client(proxy: Gunicorn) -> None:
    conn = connection(proxy.url)
    conn.request("GET", "/status?code=418")
    answer = conn.getresponse()
    assert (answer.status, answer.reason, answer.read()) == (418, "Whatever", b"body")


# -- X-Forwarded-* and Forwarded --------------------------------------------------------


def test_forwarded_headers_tell_what_the_proxy_saw(proxy: Gunicorn) -> None:
    seen = echo_headers(proxy.url, {"Host": "app.example.com:8443"})
    assert seen["X-Forwarded-For"] == "127.0.0.1"
    assert seen["X-Forwarded-Proto"] == "http"
    assert seen["X-Forwarded-Host"] == "app.example.com:8443"
    assert seen["Forwarded"] == 'for=127.0.0.1;host="app.example.com:8443";proto=http'


def test_forged_forwarded_headers_from_untrusted_peer_are_dropped(proxy: Gunicorn) -> None:
    seen = echo_headers(proxy.url, {"Host": "app.example.com", **FORGED})
    assert seen["X-Forwarded-For"] == "127.0.0.1"
    assert seen["X-Forwarded-Proto"] == "http"
    assert seen["X-Forwarded-Host"] == "app.example.com"
    assert "6.6.6.6" not in seen["Forwarded"]
    assert "evil.example" not in json.dumps(seen)


def test_forwarded_headers_from_peer_outside_trusted_networks_are_dropped(
    dev_proxy: DevProxy, upstream: ThreadedServer
) -> None:
    server = dev_proxy(
        upstream=upstream.url, public_url=PUBLIC, trusted_proxies=["10.0.0.0/8", "::1/128"]
    )
    seen = echo_headers(server.url, {"Host": "app.example.com", **FORGED})
    assert seen["X-Forwarded-For"] == "127.0.0.1"
    assert seen["X-Forwarded-Proto"] == "http"
    assert "evil.example" not in json.dumps(seen)


def test_forwarded_headers_from_trusted_peer_are_kept_and_appended(
    dev_proxy: DevProxy, upstream: ThreadedServer
) -> None:
    server = dev_proxy(upstream=upstream.url, public_url=PUBLIC, trusted_proxies=["127.0.0.0/8"])
    seen = echo_headers(server.url, {"Host": "app.example.com", **FORGED})
    assert seen["X-Forwarded-For"] == "6.6.6.6, 127.0.0.1"
    assert seen["X-Forwarded-Proto"] == "https"
    assert seen["X-Forwarded-Host"] == "evil.example"
    assert seen["Forwarded"] == (
        'for=6.6.6.6;proto=https;host=evil.example, for=127.0.0.1;host="app.example.com";proto=http'
    )


def test_host_is_the_clients_by_default(proxy: Gunicorn) -> None:
    seen = echo_headers(proxy.url, {"Host": "app.example.com"})
    assert seen["Host"] == "app.example.com"


def test_rewrite_host_sends_upstream_host_and_client_host_as_forwarded_host(
    dev_proxy: DevProxy, upstream: ThreadedServer
) -> None:
    server = dev_proxy(upstream=upstream.url, public_url=PUBLIC, rewrite_host=True)
    seen = echo_headers(server.url, {"Host": "app.example.com"})
    assert seen["Host"] == f"127.0.0.1:{upstream.port}"
    assert seen["X-Forwarded-Host"] == "app.example.com"


def test_forwarded_for_an_ipv6_peer_is_bracketed_and_quoted(upstream: ThreadedServer) -> None:
    server = make_server(
        "::1", 0, make_app(upstream=upstream.url, public_url=PUBLIC), threaded=True
    )
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        seen = echo_headers(f"http://[::1]:{server.server_port}", {"Host": "app.example.com"})
    finally:
        server.shutdown()
        server.server_close()
    assert seen["X-Forwarded-For"] == "::1"
    assert seen["Forwarded"] == 'for="[::1]";host="app.example.com";proto=http'


# -- identity and client-IP claims --------------------------------------------------------


def environ_with(key: str, remote: str) -> dict[str, object]:
    return {"HTTP_HOST": "app.example.com", "REMOTE_ADDR": remote, key: "claimed", "HTTP_X_K": "1"}


@pytest.mark.parametrize("key", [*sorted(IDENTITY_KEYS), "HTTP_X_ORY_ANYTHING", "HTTP_ORY_X"])
@pytest.mark.parametrize("remote", ["203.0.113.9", "10.1.2.3"])
def test_every_identity_header_is_left_out_whoever_sends_it(key: str, remote: str) -> None:
    headers = upstream_headers(environ_with(key, remote), TrustedProxies(["10.0.0.0/8"]), None)
    assert "claimed" not in headers.values()
    assert headers["X-K"] == "1"


@pytest.mark.parametrize("key", sorted(PROXY_KEYS))
def test_every_client_ip_or_forwarding_header_is_kept_only_from_a_trusted_peer(key: str) -> None:
    trusted = TrustedProxies(["10.0.0.0/8"])
    untrusted = upstream_headers(environ_with(key, "203.0.113.9"), trusted, None)
    assert "claimed" not in untrusted.values()
    kept = upstream_headers(environ_with(key, "10.1.2.3"), trusted, None)
    assert "claimed" in kept.values()


def test_identity_claims_never_reach_app(proxy: Gunicorn) -> None:
    seen = echo_headers(proxy.url, {**IDENTITY_CLAIMS, "X-Kept": "1"})
    assert claims_in(seen) == set()
    assert seen["X-Kept"] == "1"


def test_identity_claims_from_a_trusted_peer_never_reach_app(
    dev_proxy: DevProxy, upstream: ThreadedServer
) -> None:
    server = dev_proxy(upstream=upstream.url, public_url=PUBLIC, trusted_proxies=["127.0.0.0/8"])
    seen = echo_headers(server.url, {**IDENTITY_CLAIMS, "X-Kept": "1"})
    assert claims_in(seen) == set()
    assert seen["X-Kept"] == "1"


def test_client_ip_claims_from_an_untrusted_peer_never_reach_app(proxy: Gunicorn) -> None:
    seen = echo_headers(proxy.url, CLIENT_IP_CLAIMS)
    assert claims_in(seen) == set()
    assert "6.6.6" not in json.dumps(seen)


def test_client_ip_claims_from_a_trusted_peer_reach_app(
    dev_proxy: DevProxy, upstream: ThreadedServer
) -> None:
    server = dev_proxy(upstream=upstream.url, public_url=PUBLIC, trusted_proxies=["127.0.0.0/8"])
    seen = echo_headers(server.url, CLIENT_IP_CLAIMS)
    assert claims_in(seen) == {name.lower() for name in CLIENT_IP_CLAIMS}
    assert seen["X-Real-Ip"] == "6.6.6.1"


def test_trusted_proxies_accept_a_cidr_written_with_host_bits() -> None:
    # `10.1.2.3/8` is how many configs spell 10.0.0.0/8; refusing it would stop the proxy.
    trusted = TrustedProxies(["10.1.2.3/8", "fd00::1/8"])
    assert "10.200.0.1" in trusted and "fd12::5" in trusted
    assert "11.0.0.1" not in trusted


ORDINARY = {
    "HTTP_ACCEPT": "*/*",
    "HTTP_USER_AGENT": "ua",
    "HTTP_X_REQUEST_ID": "r",
    "PATH_INFO": "/",
}


@pytest.mark.parametrize("trusted_peer", [False, True])
def test_strip_claims_removes_every_identity_claim_and_nothing_ordinary(
    trusted_peer: bool,
) -> None:
    claims = dict.fromkeys([*IDENTITY_KEYS, "HTTP_X_ORY_SUBJECT", "HTTP_ORY_SESSION"], "ada")
    client_ips = dict.fromkeys(CLIENT_IP_KEYS, "10.0.0.1")
    environ = {**ORDINARY, **claims, **client_ips}
    strip_claims(environ, trusted_peer=trusted_peer)
    assert environ == {**ORDINARY, **(client_ips if trusted_peer else {})}
