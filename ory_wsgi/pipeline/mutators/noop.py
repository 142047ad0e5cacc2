"""`noop` mutator: the request goes upstream with no header added (Oathkeeper's noop)."""

from __future__ import annotations

from typing import Any

from ory_wsgi.pipeline.handler import Config
from ory_wsgi.pipeline.handler_config import known_keys
from ory_wsgi.pipeline.services import Services
from ory_wsgi.pipeline.state import AuthSession, RequestFacts


class NoopMutator:
    name = "noop"

    def __init__(self, services: Services) -> None:
        pass

    def prepare(self, config: Config, where: str) -> None:
        known_keys(config, (), where)

    def mutate(self, request: RequestFacts, session: AuthSession, prepared: Any) -> None:
        return None
