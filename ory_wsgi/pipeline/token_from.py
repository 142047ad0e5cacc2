"""Where a token-reading handler finds its token: Oathkeeper's `token_from`.

    source = TokenSource.parse(config.get("token_from"), where)   # once per rule
    token = source.extract(request)                                # per request: str | None

By default the token is the credential of `Authorization: Bearer <token>` (the
scheme compared without case, RFC 9110 §11.1). `token_from` names exactly one
other place: `{header = "X-Api-Token"}` (the whole header value),
`{query_parameter = "token"}` or `{cookie = "token"}`. Nothing there, or an
empty value, is None: the authenticator is not responsible and the next one is
asked, as in Oathkeeper.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs

from werkzeug.http import parse_cookie

from ory_wsgi.errors import ConfigError
from ory_wsgi.pipeline.state import RequestFacts

PLACES = ("header", "query_parameter", "cookie")


@dataclass(frozen=True, slots=True)
class TokenSource:
    place: str = ""  # "" is Authorization: Bearer
    name: str = ""

    @classmethod
    def parse(cls, config: object, where: str) -> TokenSource:
        if config is None:
            return cls()
        if not isinstance(config, dict) or len(config) != 1:
            raise ConfigError(
                f"{where}: token_from must name exactly one of header, query_parameter, cookie"
            )
        ((place, name),) = config.items()
        if place not in PLACES:
            raise ConfigError(
                f"{where}: token_from must name one of header, query_parameter, cookie; "
                f"got {place!r}"
            )
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{where}: token_from.{place} must be a non-empty name")
        return cls(place, name.strip())

    def extract(self, request: RequestFacts) -> str | None:
        if not self.place:
            return bearer(first(request, "Authorization"))
        if self.place == "header":
            value = first(request, self.name)
        elif self.place == "query_parameter":
            values = parse_qs(request.query, keep_blank_values=True).get(self.name)
            value = values[0] if values else None
        else:
            value = cookie(first(request, "Cookie"), self.name)
        value = (value or "").strip()
        return value or None


def first(request: RequestFacts, name: str) -> str | None:
    values = request.headers.getlist(name)
    return values[0] if values else None


def bearer(authorization: str | None) -> str | None:
    """The token of `Authorization: Bearer <token>`, or None for any other or no scheme."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def cookie(header: str | None, name: str) -> str | None:
    if not header:
        return None
    # werkzeug's reader skips a malformed pair instead of dropping the rest of the header.
    return parse_cookie(header).get(name)
