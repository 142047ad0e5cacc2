"""The data templates see (Oathkeeper's `AuthenticationSession`), and views of it.

`TemplateContext`, `MatchContext` and `RequestURL` are built per request by the
pipeline. `HeaderView` and `QueryValues` show headers and a query string as Go's
`http.Header` and `url.Values` do (canonical keys, `Get`, `Values`, `Has`); they are
made only when a template reads them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote, unquote_plus

from werkzeug.datastructures import Headers


class HeaderSource(Protocol):
    """What a header mapping must offer: werkzeug's `Headers` and `EnvironHeaders` do."""

    def getlist(self, key: str) -> list[str]: ...

    def items(self) -> Iterable[tuple[str, str]]: ...


@dataclass(frozen=True, slots=True)
class RequestURL:
    """The matched URL, as Go's `url.URL` shows it to templates."""

    scheme: str = ""
    host: str = ""
    path: str = ""
    raw_query: str = ""
    fragment: str = ""
    # The path as sent (percent-encoded), when it differs from `path`'s plain escaping.
    raw_path: str = ""

    def query(self) -> QueryValues:
        return QueryValues(_parse_query(self.raw_query))

    def escaped_path(self) -> str:
        return self.raw_path or quote(self.path, safe="/$&+,:;=@")

    def hostname(self) -> str:
        host = self.host
        if host.startswith("["):
            return host[1 : host.find("]")] if "]" in host else host[1:]
        return host.rpartition(":")[0] if ":" in host else host

    def port(self) -> str:
        host = self.host
        colon = host.rfind(":")
        if colon < 0 or "]" in host[colon:]:
            return ""
        return host[colon + 1 :]

    def request_uri(self) -> str:
        uri = self.escaped_path() or "/"
        return f"{uri}?{self.raw_query}" if self.raw_query else uri

    def __str__(self) -> str:
        out = f"{self.scheme}://{self.host}" if self.scheme else self.host
        out += self.escaped_path()
        if self.raw_query:
            out += "?" + self.raw_query
        if self.fragment:
            out += "#" + quote(self.fragment, safe="/$&+,:;=@?!()*'")
        return out


@dataclass(frozen=True, slots=True)
class MatchContext:
    """Oathkeeper's `.MatchContext`: what the rule matched on."""

    regexp_capture_groups: tuple[str, ...] = ()
    url: RequestURL = RequestURL()
    method: str = ""
    header: HeaderSource = field(default_factory=Headers)


@dataclass(frozen=True, slots=True)
class TemplateContext:
    """Oathkeeper's `AuthenticationSession`, the data every template sees.

    Built once per request by the pipeline; nothing here is copied or converted
    until a template reads it, so werkzeug's `EnvironHeaders(environ)` (lazy) is the
    cheap `match.header`. `header` holds the headers set so far by the rule's
    handlers (Oathkeeper's `.Header`). `extra` is the authenticator's session data.
    """

    subject: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)
    header: HeaderSource = field(default_factory=Headers)
    match: MatchContext = MatchContext()


class HeaderView:
    """A header mapping as Go's `http.Header`: `Get`, `Values`, canonical keys."""

    __slots__ = ("source",)

    def __init__(self, source: HeaderSource) -> None:
        self.source = source

    def get(self, key: str) -> str:
        values = self.source.getlist(key)
        return values[0] if values else ""

    def values(self, key: str) -> list[str]:
        return list(self.source.getlist(key))

    def as_dict(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for key, value in self.source.items():
            out.setdefault(_canonical_header_key(key), []).append(value)
        return out


class QueryValues:
    """A parsed query string as Go's `url.Values`: `Get`, `Has`."""

    __slots__ = ("values",)

    def __init__(self, values: dict[str, list[str]]) -> None:
        self.values = values

    def get(self, key: str) -> str:
        found = self.values.get(key)
        return found[0] if found else ""

    def has(self, key: str) -> bool:
        return key in self.values

    def as_dict(self) -> dict[str, list[str]]:
        return self.values


_BAD_ESCAPE_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _parse_query(raw: str) -> dict[str, list[str]]:
    """Go's `url.ParseQuery`: `&`-separated; pairs with `;` or bad escapes are dropped."""
    out: dict[str, list[str]] = {}
    for part in raw.split("&"):
        if not part or ";" in part or _BAD_ESCAPE_RE.search(part):
            continue
        key, _, value = part.partition("=")
        out.setdefault(unquote_plus(key), []).append(unquote_plus(value))
    return out


def _canonical_header_key(key: str) -> str:
    """Go's `CanonicalMIMEHeaderKey`: `x-user-id` -> `X-User-Id`."""
    if not key or not all(c.isascii() and (c.isalnum() or c in "!#$%&'*+-.^_`|~") for c in key):
        return key
    return "-".join(part[:1].upper() + part[1:].lower() for part in key.split("-"))


def known_as_map(value: object) -> dict[str, Any] | None:
    """The Go map behind a header or query view, else None."""
    if type(value) is HeaderView or type(value) is QueryValues:
        return value.as_dict()
    return None
