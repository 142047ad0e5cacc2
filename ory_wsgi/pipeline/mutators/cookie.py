"""`cookie` mutator: templated cookies on the upstream request (Oathkeeper's `cookie`).

    mutators = [{handler = "cookie", config = {cookies = {user = "{{ print .Subject }}"}}}]

The upstream's `Cookie` header becomes the rule's cookies (in config order)
followed by the client's other cookies, passed as sent; a client cookie with
the name of a rule cookie is dropped (also when hidden after a comma, for
parsers that split there), so a client cannot choose its value.
When an earlier mutator already set `Cookie`, that header is the base instead
of the client's.

Names are checked at load (HTTP tokens). Values are made safe as Go's
`net/http` makes them, which is what Oathkeeper sends: bytes a cookie value
may not hold (control characters, non-ASCII, `"`, `;`, `\\`) are dropped,
with one log line, and a value with a space or a comma is quoted. A value can
therefore never add a cookie or a header.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from ory_wsgi.errors import ConfigError
from ory_wsgi.pipeline.handler import Config
from ory_wsgi.pipeline.handler_config import TOKEN_RE, known_keys
from ory_wsgi.pipeline.mutators.header import compile_values, rendered
from ory_wsgi.pipeline.services import Services
from ory_wsgi.pipeline.state import AuthSession, RequestFacts
from ory_wsgi.rules.template import Template

log = logging.getLogger("ory_wsgi.pipeline.mutators")

# Go's validCookieValueByte: 0x20-0x7e without `"`, `;` and `\`.
_INVALID_VALUE_RE = re.compile(r'[^\x20-\x7e]|[";\\]')


@dataclass(frozen=True, slots=True)
class PreparedCookies:
    where: str
    cookies: tuple[tuple[str, Template], ...]
    names: frozenset[str]


def cookie_name(name: str, where: str) -> str:
    """A cookie name from a rule, checked at load (an HTTP token)."""
    if not TOKEN_RE.match(name):
        raise ConfigError(f"{where}: {name!r} is not a valid cookie name")
    return name


def cookie_value(value: str, name: str, where: str) -> str:
    """Go's `sanitizeCookieValue`: drop what a cookie value cannot hold; quote ` ` and `,`."""
    if _INVALID_VALUE_RE.search(value):
        log.warning("%s: dropped characters a cookie cannot hold from the value of %s", where, name)
        value = _INVALID_VALUE_RE.sub("", value)
    if value and (" " in value or "," in value):
        return f'"{value}"'
    return value


class CookieMutator:
    name = "cookie"

    def __init__(self, services: Services) -> None:
        pass

    def prepare(self, config: Config, where: str) -> PreparedCookies:
        known_keys(config, ("cookies",), where)
        cookies = compile_values(
            config, "cookies", where, cookie_name, _INVALID_VALUE_RE, "a character a cookie cannot"
        )
        return PreparedCookies(where, cookies, frozenset(name for name, _ in cookies))

    def mutate(self, request: RequestFacts, session: AuthSession, prepared: Any) -> None:
        assert isinstance(prepared, PreparedCookies)
        if not prepared.cookies:
            return
        parts = [
            f"{name}={cookie_value(value, name, prepared.where)}"
            for name, value in rendered(prepared.cookies, session, prepared.where)
        ]
        base = session.header.get("Cookie")
        if base is None:
            base = "; ".join(request.headers.getlist("Cookie"))
        for part in base.split(";"):
            part = part.strip()
            # Parsers that also split on "," (Python's SimpleCookie) must not find a
            # client's copy of a rule cookie either: `x=1, user=forged` goes too.
            if part and not any(
                piece.partition("=")[0].strip() in prepared.names for piece in part.split(",")
            ):
                parts.append(part)
        session.header["Cookie"] = "; ".join(parts)
