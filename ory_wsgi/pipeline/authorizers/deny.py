"""`deny`: every request is refused with 403 forbidden (Oathkeeper)."""

from __future__ import annotations

from typing import Any

from ory_wsgi.errors import ConfigError
from ory_wsgi.pipeline.errors import DecisionError
from ory_wsgi.pipeline.handler import Config
from ory_wsgi.pipeline.services import Services
from ory_wsgi.pipeline.state import AuthSession, RequestFacts


class Deny:
    name = "deny"

    def __init__(self, services: Services) -> None:
        del services

    def prepare(self, config: Config, where: str) -> None:
        if config:
            raise ConfigError(f"{where}: takes no config, got {sorted(config)[0]!r}")

    def authorize(self, request: RequestFacts, session: AuthSession, prepared: Any) -> None:
        raise DecisionError(403, "forbidden", "Access is denied.")
