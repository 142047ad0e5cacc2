"""`redirect` error handler: send the client elsewhere, e.g. to log in (Oathkeeper's `redirect`).

    errors = [{handler = "redirect", config = {to = "https://login.example/sign-in",
               return_to_query_param = "return_to", when = [{error = ["unauthorized"]}]}}]

`to` (required) is an absolute http(s) URL or a path on this site (`/login`);
`code` is 301, 302 (the default) or 303 (ours: a POST that fails is followed
by a GET). `return_to_query_param` adds the URL the client asked for to `to`'s
query, replacing a parameter of that name; that URL is built from the PUBLIC
URL (`[proxy] public_url`) and the request target, never from Host or
X-Forwarded-Host, so a client cannot make the login page send a user
elsewhere afterwards. All of it is checked at load.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote_plus, urlsplit

from ory_wsgi.errors import ConfigError
from ory_wsgi.pipeline.error_handlers.when import ConditionalHandler, When, compile_when
from ory_wsgi.pipeline.errors import DecisionError
from ory_wsgi.pipeline.handler import Config
from ory_wsgi.pipeline.handler_config import known_keys, string
from ory_wsgi.pipeline.services import Services
from ory_wsgi.pipeline.state import RequestFacts

CODES = (301, 302, 303)
# Oathkeeper's schema for return_to_query_param.
_PARAM_RE = re.compile(r"^[A-Za-z0-9,._~-]*$")
_UNSAFE_RE = re.compile(r"[\x00-\x20\x7f-\U0010ffff]")


@dataclass(frozen=True, slots=True)
class PreparedRedirect:
    when: When
    code: int
    to: str  # without its query and fragment when return_to is added
    query: tuple[str, ...]  # `to`'s query parameters, as written, minus return_to's
    fragment: str
    param: str


class RedirectErrorHandler(ConditionalHandler):
    name = "redirect"

    def __init__(self, services: Services) -> None:
        super().__init__(services)
        self.public_url = services.public_url.rstrip("/")

    def prepare(self, config: Config, where: str) -> PreparedRedirect:
        known_keys(config, ("to", "code", "return_to_query_param", "when"), where)
        to = string(config, "to", where)
        if not to:
            raise ConfigError(f"{where}: to is required (an http(s) URL or a path)")
        if _UNSAFE_RE.search(to):
            raise ConfigError(f"{where}: to holds a space, control or non-ASCII character")
        parts = urlsplit(to)
        if parts.scheme:
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigError(f"{where}: to must be an http(s) URL or a path, got {to!r}")
        elif parts.netloc or not to.startswith("/") or to.startswith("//"):
            raise ConfigError(f"{where}: to must be an http(s) URL or a path, got {to!r}")
        code = config.get("code", 302)
        if type(code) is not int or code not in CODES:
            raise ConfigError(f"{where}: code must be 301, 302 or 303, got {code!r}")
        param = string(config, "return_to_query_param", where)
        if not _PARAM_RE.match(param):
            raise ConfigError(f"{where}: return_to_query_param {param!r} is not a plain name")
        when = compile_when(config.get("when"), where, self.trusted)
        if not param:
            return PreparedRedirect(when, code, to, (), "", "")
        base = to.split("#", 1)[0].split("?", 1)[0]
        query = tuple(
            part
            for part in parts.query.split("&")
            if part and unquote_plus(part.partition("=")[0]) != param
        )
        fragment = f"#{parts.fragment}" if "#" in to else ""
        return PreparedRedirect(when, code, base, query, fragment, param)

    def answer(self, request: RequestFacts, error: DecisionError, prepared: Any) -> DecisionError:
        assert isinstance(prepared, PreparedRedirect)
        location = prepared.to
        if prepared.param:
            pair = f"{prepared.param}={quote(self.return_to(request), safe='')}"
            location += "?" + "&".join((*prepared.query, pair)) + prepared.fragment
        return DecisionError(
            prepared.code,
            error.error_id,
            error.message,
            headers=[("Location", location)],
            body=b"",
            content_type="text/plain; charset=utf-8",
            kind=error.kind,
            reason=error.reason,
        )

    def return_to(self, request: RequestFacts) -> str:
        """The public URL of this request: the public URL + the target, never Host."""
        target = request.target
        # The target is a path here; anything that parses as another origin becomes "/".
        if not target.startswith("/") or target.startswith("//") or urlsplit(target).netloc:
            target = "/"
        return self.public_url + target
