"""Which request headers reach the upstream, and how X-Forwarded-* is set.

Incoming X-Forwarded-* and Forwarded are believed only when the peer is in
`proxy.trusted_proxies`; otherwise they are replaced by what this proxy saw,
and client-IP headers (`X-Real-IP`, `True-Client-IP`, ...) and the rest of
the X-Forwarded-* family (`-Port`, `-Prefix`, ...) are dropped. A
client's Authorization, Ory-* and identity headers (`X-Ory-*`, `Remote-User`,
`X-Forwarded-User`, ...: `ory_wsgi.identity_headers`) are never copied: the
upstream gets `environ["ory.authorization"]` (set by the JWT layer) or nothing,
and the headers the access rule's mutators set (`environ["ory.upstream_headers"]`).
"""

from __future__ import annotations

import ipaddress
import re
import ssl
from collections.abc import Callable, Iterable

from ory_wsgi.errors import BadRequest
from ory_wsgi.identity_headers import IDENTITY_KEYS, IDENTITY_PREFIXES, PROXY_KEYS

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

# environ keys handled apart from the plain copy, or never forwarded.
_HANDLED = frozenset(
    {
        "HTTP_HOST",
        "HTTP_AUTHORIZATION",
        "HTTP_X_FORWARDED_FOR",
        "HTTP_X_FORWARDED_PROTO",
        "HTTP_X_FORWARDED_HOST",
        "HTTP_FORWARDED",
        "HTTP_CONTENT_LENGTH",
        "HTTP_CONTENT_TYPE",
        "HTTP_EXPECT",  # answered by the server in front; never forwarded
    }
    | {"HTTP_" + name.upper().replace("-", "_") for name in HOP_BY_HOP}
)
# Never copied as they come, for a peer in trusted_proxies and for any other.
_NOT_COPIED_FROM_TRUSTED = _HANDLED | IDENTITY_KEYS
_NOT_COPIED = _NOT_COPIED_FROM_TRUSTED | PROXY_KEYS

_HOST_RE = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]+)(?::[0-9]{1,5})?$")

# Names of the environ keys turned into header names, computed once.
_header_names: dict[str, str] = {}


def header_name(key: str) -> str:
    """`HTTP_X_REQUEST_ID` -> `X-Request-Id`."""
    name = _header_names.get(key)
    if name is None:
        name = "-".join(part.capitalize() for part in key[5:].split("_"))
        if len(_header_names) < 4096:
            _header_names[key] = name
    return name


class TrustedProxies:
    """The set of peers whose X-Forwarded-* headers are believed."""

    def __init__(self, cidrs: Iterable[str]) -> None:
        self.networks = tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)

    def __contains__(self, address: str) -> bool:
        if not self.networks or not address:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.networks)


def client_host(environ: dict[str, object]) -> str:
    """The Host the client asked for, checked so it cannot smuggle anything."""
    host = environ.get("HTTP_HOST")
    if not isinstance(host, str) or not host:
        name, port = environ.get("SERVER_NAME", "localhost"), environ.get("SERVER_PORT", "")
        scheme_port = "443" if environ.get("wsgi.url_scheme") == "https" else "80"
        host = f"{name}:{port}" if port and port != scheme_port else str(name)
    if len(host) > 255 or not _HOST_RE.match(host):
        raise BadRequest("invalid Host header")
    return host


def connection_scheme(environ: dict[str, object]) -> str:
    """The scheme of the connection this proxy accepted, whatever the client claims.

    gunicorn rewrites `wsgi.url_scheme` from X-Forwarded-Proto (and -Protocol,
    -Ssl) for peers in its own `forwarded_allow_ips`, which holds 127.0.0.1 by
    default: that must not bypass `trusted_proxies`, so under gunicorn the
    socket itself says whether TLS was spoken.
    """
    sock = environ.get("gunicorn.socket")
    if sock is not None:
        return "https" if isinstance(sock, ssl.SSLSocket) else "http"
    return str(environ.get("wsgi.url_scheme") or "http")


def upstream_headers(
    environ: dict[str, object],
    trusted: TrustedProxies,
    upstream_host: str | None,
) -> dict[str, str]:
    """The header dict sent upstream; `upstream_host` set means `rewrite_host`."""
    connection = environ.get("HTTP_CONNECTION")
    dropped: set[str] = set()
    if isinstance(connection, str) and connection:
        dropped = {
            "HTTP_" + token.strip().upper().replace("-", "_") for token in connection.split(",")
        }
    remote = str(environ.get("REMOTE_ADDR") or "")
    trusted_peer = remote in trusted
    not_copied = _NOT_COPIED_FROM_TRUSTED if trusted_peer else _NOT_COPIED
    headers: dict[str, str] = {}
    for key, value in environ.items():
        if (
            key.startswith("HTTP_")
            and key not in not_copied
            and key not in dropped
            and not key.startswith(IDENTITY_PREFIXES)
        ):
            headers[header_name(key)] = value  # type: ignore[assignment]
    content_type = environ.get("CONTENT_TYPE")
    if content_type:
        headers["Content-Type"] = content_type  # type: ignore[assignment]

    host = client_host(environ)
    scheme = connection_scheme(environ)
    forwarded_for = remote
    forwarded_proto, forwarded_host = scheme, host
    forwarded = _forwarded_element(remote, host, scheme)
    if trusted_peer:
        prior = environ.get("HTTP_X_FORWARDED_FOR")
        if prior:
            forwarded_for = f"{prior}, {remote}"
        forwarded_proto = _first(environ.get("HTTP_X_FORWARDED_PROTO")) or scheme
        forwarded_host = _first(environ.get("HTTP_X_FORWARDED_HOST")) or host
        prior = environ.get("HTTP_FORWARDED")
        if prior:
            forwarded = f"{prior}, {forwarded}"
    headers["X-Forwarded-For"] = forwarded_for
    headers["X-Forwarded-Proto"] = forwarded_proto
    headers["X-Forwarded-Host"] = forwarded_host
    headers["Forwarded"] = forwarded
    headers["Host"] = upstream_host or host

    authorization = environ.get("ory.authorization")
    if authorization:
        headers["Authorization"] = authorization  # type: ignore[assignment]
    # What the rule's mutators set (`header`, `cookie`), identity headers included:
    # the client's own were never copied above.
    decided = environ.get("ory.upstream_headers")
    if decided:
        headers.update(decided)  # type: ignore[call-overload]
    return headers


def _first(value: object) -> str:
    if not isinstance(value, str):
        return ""
    return value.split(",", 1)[0].strip()


def _forwarded_element(remote: str, host: str, scheme: str) -> str:
    node = f'"[{remote}]"' if ":" in remote else (remote or "unknown")
    return f'for={node};host="{host}";proto={scheme}'


def response_headers(
    headers: Iterable[tuple[str, str]],
    rewrite_location: Callable[[str], str] | None = None,
) -> list[tuple[str, str]]:
    """Drop hop-by-hop headers and those named in Connection, keep the rest in order.

    `rewrite_location`, when given, maps the value of each Location header.
    """
    kept: list[tuple[str, str]] = []
    named: set[str] = set()
    for name, value in headers:
        lowered = name.lower()
        if lowered in HOP_BY_HOP:
            if lowered == "connection":
                named.update(token.strip().lower() for token in value.split(","))
            continue
        if rewrite_location is not None and lowered == "location":
            value = rewrite_location(value)
        kept.append((name, value))
    if named - HOP_BY_HOP:
        # A Connection header may name headers that came before it: filter once more.
        kept = [(name, value) for name, value in kept if name.lower() not in named]
    return kept
