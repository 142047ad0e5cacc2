"""`anonymous`: the request goes on as `subject` (default "anonymous").

Not responsible when the request has an `Authorization` header (as in
Oathkeeper): a client that sent a credential must be judged on it, not let
through as nobody. `[[public]]` does not use it (see `ory_wsgi.pipeline.shorthand`).
"""

from __future__ import annotations

from typing import Any

from ory_wsgi.errors import ConfigError
from ory_wsgi.pipeline.errors import NotResponsible
from ory_wsgi.pipeline.handler import Config
from ory_wsgi.pipeline.services import Services
from ory_wsgi.pipeline.state import AuthSession, RequestFacts


class Anonymous:
    name = "anonymous"

    def __init__(self, services: Services) -> None:
        del services

    def prepare(self, config: Config, where: str) -> str:
        unknown = sorted(set(config) - {"subject"})
        if unknown:
            raise ConfigError(f"{where}: unknown config key {unknown[0]!r}")
        subject = config.get("subject", "anonymous")
        if not isinstance(subject, str) or not subject:
            raise ConfigError(f"{where}: subject must be a non-empty string")
        return subject

    def authenticate(self, request: RequestFacts, session: AuthSession, prepared: Any) -> None:
        if request.headers.getlist("Authorization"):
            raise NotResponsible
        session.subject = prepared
        session.authenticator = self.name
