"""`unauthorized`: always responsible, always refuses with 401 (Oathkeeper)."""

from __future__ import annotations

from typing import Any

from ory_wsgi.errors import ConfigError
from ory_wsgi.pipeline.errors import DecisionError
from ory_wsgi.pipeline.handler import Config
from ory_wsgi.pipeline.services import Services
from ory_wsgi.pipeline.state import AuthSession, RequestFacts


class Unauthorized:
    name = "unauthorized"

    def __init__(self, services: Services) -> None:
        del services

    def prepare(self, config: Config, where: str) -> None:
        if config:
            raise ConfigError(f"{where}: takes no config, got {sorted(config)[0]!r}")

    def authenticate(self, request: RequestFacts, session: AuthSession, prepared: Any) -> None:
        raise DecisionError(401, "unauthorized", "Access credentials are not sufficient.")
