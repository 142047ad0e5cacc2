"""What every pipeline handler is: configured once per rule at load, called per request.

    class Allow:
        name = "allow"
        def prepare(self, config, where): return None          # load time, once per rule
        def authorize(self, request, session, prepared): ...   # per request; raise to refuse

A handler class is registered by kind and name (`ory_wsgi.pipeline.registry`).
`prepare(config, where)` gets the rule's config merged key by key over the global
one, checks it and returns whatever the per-request call needs (compiled templates,
parsed durations); a `ConfigError` from it names `where` (the rule and handler) and
marks that rule invalid, so it fails closed. Per request a handler reads the
`RequestFacts` and the rule's `AuthSession`, and refuses by raising
`ory_wsgi.pipeline.errors.DecisionError` (an authenticator that does not apply
raises `NotResponsible`). Handlers keep no per-request state on themselves: one
instance serves every thread.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from ory_wsgi.pipeline.errors import DecisionError
from ory_wsgi.pipeline.state import AuthSession, RequestFacts

Config = Mapping[str, Any]


class Authenticator(Protocol):
    name: str

    def prepare(self, config: Config, where: str) -> Any: ...

    def authenticate(self, request: RequestFacts, session: AuthSession, prepared: Any) -> None:
        """Fill `session` (subject, extra, ory_session) or raise NotResponsible/DecisionError."""


class Authorizer(Protocol):
    name: str

    def prepare(self, config: Config, where: str) -> Any: ...

    def authorize(self, request: RequestFacts, session: AuthSession, prepared: Any) -> None:
        """Return to allow; raise DecisionError (403 forbidden, 503 ...) to refuse."""


class Mutator(Protocol):
    name: str

    def prepare(self, config: Config, where: str) -> Any: ...

    def mutate(self, request: RequestFacts, session: AuthSession, prepared: Any) -> None:
        """Add to `session.header` / `session.cookies` what the upstream must receive."""


class ErrorHandler(Protocol):
    name: str

    def prepare(self, config: Config, where: str) -> Any:
        """Includes the `when` clauses (ory_wsgi.pipeline.error_handlers.when)."""

    def matches(self, request: RequestFacts, error: DecisionError, prepared: Any) -> bool:
        """Whether this handler's `when` clauses accept this error and request."""

    def answer(self, request: RequestFacts, error: DecisionError, prepared: Any) -> DecisionError:
        """The `DecisionError` to render (e.g. a redirect's 302 with Location)."""
