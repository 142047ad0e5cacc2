"""`www_authenticate` error handler: 401 asking for HTTP Basic credentials (Oathkeeper's).

    errors = [{handler = "www_authenticate", config = {realm = "Staff only"}}]

Answers 401 with `WWW-Authenticate: Basic realm="<realm>"` (default realm
"Please authenticate."), the realm quoted as RFC 7617 asks (Oathkeeper sends
it unquoted), and the usual short error body.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ory_wsgi.errors import ConfigError
from ory_wsgi.pipeline.error_handlers.when import ConditionalHandler, When, compile_when
from ory_wsgi.pipeline.errors import DecisionError
from ory_wsgi.pipeline.handler import Config
from ory_wsgi.pipeline.handler_config import known_keys, string
from ory_wsgi.pipeline.state import RequestFacts

DEFAULT_REALM = "Please authenticate."
_BAD_REALM_RE = re.compile(r"[\x00-\x1f\x7f-\U0010ffff]")


@dataclass(frozen=True, slots=True)
class PreparedWwwAuthenticate:
    when: When
    challenge: str


class WwwAuthenticateErrorHandler(ConditionalHandler):
    name = "www_authenticate"

    def prepare(self, config: Config, where: str) -> PreparedWwwAuthenticate:
        known_keys(config, ("realm", "when"), where)
        realm = string(config, "realm", where) or DEFAULT_REALM
        if _BAD_REALM_RE.search(realm):
            raise ConfigError(f"{where}: realm must be printable ASCII")
        quoted = realm.replace("\\", "\\\\").replace('"', '\\"')
        return PreparedWwwAuthenticate(
            compile_when(config.get("when"), where, self.trusted), f'Basic realm="{quoted}"'
        )

    def answer(self, request: RequestFacts, error: DecisionError, prepared: Any) -> DecisionError:
        assert isinstance(prepared, PreparedWwwAuthenticate)
        return DecisionError(
            401,
            error.error_id,
            "The request could not be authorized",
            headers=[("WWW-Authenticate", prepared.challenge)],
            kind=error.kind,
            reason=error.reason,
        )
