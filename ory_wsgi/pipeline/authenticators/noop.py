"""`noop`: always responsible, authenticates nobody; the subject stays empty (Oathkeeper)."""

from __future__ import annotations

from typing import Any

from ory_wsgi.errors import ConfigError
from ory_wsgi.pipeline.handler import Config
from ory_wsgi.pipeline.services import Services
from ory_wsgi.pipeline.state import AuthSession, RequestFacts


class Noop:
    name = "noop"

    def __init__(self, services: Services) -> None:
        del services

    def prepare(self, config: Config, where: str) -> None:
        if config:
            raise ConfigError(f"{where}: takes no config, got {sorted(config)[0]!r}")

    def authenticate(self, request: RequestFacts, session: AuthSession, prepared: Any) -> None:
        session.authenticator = self.name
