"""`when` clauses of error handlers (Oathkeeper's pipeline/errors/when.go), compiled at load.

    when:
      - error: [unauthorized, forbidden]
        request:
          header: {accept: [text/html, "text/*"], content_type: [application/json]}
          remote_ip: {match: [10.0.0.0/8], respect_forwarded_for_header: true}

As in Oathkeeper: no clauses match every error. Several clauses: any one may
match. Within a clause everything listed must hold: the error is one of
`error` (kinds are snake-cased status texts: `unauthorized`, `forbidden`,
`not_found`, `internal_server_error`, `too_many_requests`, ...; an empty list is
any error), and each of `accept`, `content_type` and `remote_ip.match` that is
given matches. A missing `Accept` or `Content-Type` counts as
`application/octet-stream`.

MIME lists match as Oathkeeper's: a handler entry `*/*` matches anything,
`text/*` matches any `text/...` the request names, otherwise the exact type;
a wildcard in the request only matches the same wildcard. Parameters are
ignored. Ours beyond it: types compare case-insensitively, an `Accept` entry
with `q=0` (the client refuses it) does not count, and a malformed header
matches nothing instead of failing the request.

`remote_ip.match` are CIDRs (a bare address is one host), checked against the
peer (IPv4-mapped IPv6 addresses count as IPv4). `respect_forwarded_for_header`
adds X-Forwarded-For, but only from a peer in `[proxy] trusted_proxies`, and
only the addresses the trusted chain vouches for: read from the right, up to
and including the first one that is not itself a trusted proxy (Oathkeeper
believes every entry, which any client can write). The schema's `cidr` list
is read as `remote_ip.match`.
"""

from __future__ import annotations

import difflib
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from werkzeug.datastructures import MIMEAccept
from werkzeug.http import parse_accept_header, parse_options_header

from ory_wsgi.errors import ConfigError
from ory_wsgi.headers import TrustedProxies
from ory_wsgi.pipeline.errors import DecisionError
from ory_wsgi.pipeline.handler_config import known_keys, string_list
from ory_wsgi.pipeline.services import Services
from ory_wsgi.pipeline.state import RequestFacts

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
DEFAULT_MIME = "application/octet-stream"


def status_kind(status: int) -> str:
    """Go's `statusText` of when.go: `404` -> `not_found`, `418` -> `im_a_teapot`."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        return ""
    return phrase.lower().replace(" ", "_").replace("'", "").replace("-", "_")


# The names `error` may list: every 4xx/5xx status, snake-cased.
ERROR_KINDS = frozenset(status_kind(s) for s in HTTPStatus if 400 <= s < 600)


@dataclass(frozen=True, slots=True)
class Clause:
    errors: frozenset[str]
    accept: tuple[str, ...]
    content_type: tuple[str, ...]
    networks: tuple[IPNetwork, ...]
    forwarded_for: bool

    def matches(self, request: RequestFacts, error: DecisionError, trusted: TrustedProxies) -> bool:
        if self.errors and error.kind not in self.errors:
            if status_kind(error.status) not in self.errors:
                return False
        headers = request.headers
        if self.content_type:
            raw = _first(headers.getlist("Content-Type")) or DEFAULT_MIME
            if not _mime_matches([parse_options_header(raw)[0]], self.content_type):
                return False
        if self.accept:
            raw = _first(headers.getlist("Accept")) or DEFAULT_MIME
            accepted = [
                value.split(";")[0] for value, q in parse_accept_header(raw, MIMEAccept) if q > 0
            ]
            if not _mime_matches(accepted, self.accept):
                return False
        if self.networks:
            return any(
                _in_networks(address, self.networks)
                for address in _client_addresses(request, self.forwarded_for, trusted)
            )
        return True


@dataclass(frozen=True, slots=True)
class When:
    """The compiled `when` list; `matches` is what an error handler's `matches` returns."""

    clauses: tuple[Clause, ...]
    trusted: TrustedProxies

    def matches(self, request: RequestFacts, error: DecisionError) -> bool:
        if not self.clauses:
            return True
        return any(clause.matches(request, error, self.trusted) for clause in self.clauses)


def compile_when(raw: Any, where: str, trusted: TrustedProxies) -> When:
    """Check and compile a handler's `when` list; ConfigError naming `where` if wrong."""
    where = f"{where} when"
    if raw is None:
        raw = []
    if not isinstance(raw, list | tuple):
        raise ConfigError(f"{where}: must be a list of clauses, got {raw!r}")
    return When(tuple(_clause(item, f"{where}[{i}]") for i, item in enumerate(raw)), trusted)


def _clause(raw: Any, where: str) -> Clause:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: must be a table with error and/or request")
    known_keys(raw, ("error", "request"), where)
    errors = string_list(raw.get("error"), f"{where}.error")
    for kind in errors:
        if kind not in ERROR_KINDS:
            close = difflib.get_close_matches(kind, sorted(ERROR_KINDS), n=1)
            hint = f' (did you mean "{close[0]}"?)' if close else ""
            raise ConfigError(f"{where}.error: unknown error kind {kind!r}{hint}")
    request = raw.get("request") or {}
    if not isinstance(request, Mapping):
        raise ConfigError(f"{where}.request: must be a table")
    known_keys(request, ("header", "remote_ip", "cidr"), f"{where}.request")
    header = request.get("header") or {}
    if not isinstance(header, Mapping):
        raise ConfigError(f"{where}.request.header: must be a table")
    known_keys(header, ("accept", "content_type"), f"{where}.request.header")
    remote = request.get("remote_ip") or {}
    if not isinstance(remote, Mapping):
        raise ConfigError(f"{where}.request.remote_ip: must be a table")
    known_keys(remote, ("match", "respect_forwarded_for_header"), f"{where}.request.remote_ip")
    forwarded_for = remote.get("respect_forwarded_for_header", False)
    if not isinstance(forwarded_for, bool):
        raise ConfigError(
            f"{where}.request.remote_ip.respect_forwarded_for_header: must be true or false"
        )
    cidrs = string_list(remote.get("match"), f"{where}.request.remote_ip.match")
    cidrs += string_list(request.get("cidr"), f"{where}.request.cidr")
    return Clause(
        errors=frozenset(errors),
        accept=_mime_list(header.get("accept"), f"{where}.request.header.accept"),
        content_type=_mime_list(header.get("content_type"), f"{where}.request.header.content_type"),
        networks=tuple(_network(cidr, f"{where}.request.remote_ip.match") for cidr in cidrs),
        forwarded_for=forwarded_for,
    )


def _mime_list(raw: Any, where: str) -> tuple[str, ...]:
    out = []
    for value in string_list(raw, where):
        mime = value.split(";")[0].strip().lower()
        kind, slash, sub = mime.partition("/")
        if not kind or not slash or not sub or (kind == "*" and sub != "*"):
            raise ConfigError(f"{where}: {value!r} is not a MIME type like text/html or text/*")
        out.append(mime)
    return tuple(out)


def _network(cidr: str, where: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(cidr.strip(), strict=False)
    except ValueError:
        raise ConfigError(f"{where}: {cidr!r} is not a CIDR like 10.0.0.0/8") from None


def _mime_matches(requested: Sequence[str], wanted: Sequence[str]) -> bool:
    """when.go's matchesAcceptMIME over already parsed request values."""
    for value in requested:
        actual = value.strip().lower()
        major = actual.split("/")[0]
        for mime in wanted:
            if mime == "*/*" or mime == actual:
                return True
            if mime.endswith("/*") and mime[:-2] == major:
                return True
    return False


def _client_addresses(
    request: RequestFacts, forwarded_for: bool, trusted: TrustedProxies
) -> list[str]:
    addresses = [request.remote_addr]
    if forwarded_for and request.remote_addr in trusted:
        hops = ",".join(request.headers.getlist("X-Forwarded-For")).split(",")
        for hop in reversed(hops):
            hop = hop.strip()
            if not hop:
                continue
            addresses.append(hop)
            if hop not in trusted:
                break
    return addresses


def _in_networks(address: str, networks: Sequence[IPNetwork]) -> bool:
    try:
        ip: IPAddress = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == network.version and ip in network for network in networks)


def _first(values: list[str]) -> str:
    return values[0] if values else ""


class ConditionalHandler:
    """What every error handler shares: built with the trusted proxies, `when` in its config."""

    name = ""

    def __init__(self, services: Services) -> None:
        self.trusted = TrustedProxies(services.settings.proxy.trusted_proxies)

    def matches(self, request: RequestFacts, error: DecisionError, prepared: Any) -> bool:
        when: When = prepared.when
        return when.matches(request, error)
