"""A bare adapter around a Pipeline for in-process tests (werkzeug.test.Client).

Allowed requests answer 200 with JSON: the rule, the subject and the headers
the mutators set; refusals are the Deny's own answer, with `X-Rule` and
`X-Handler` naming the rule and the error handler.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from werkzeug.test import Client

from ory_wsgi.errors import BadRequest
from ory_wsgi.ory.cache import SessionCache
from ory_wsgi.ory.client import OryClient, session_cookie_names
from ory_wsgi.pipeline.decision import Allow, Pipeline
from ory_wsgi.pipeline.registry import Registry, default_registry
from ory_wsgi.pipeline.request import request_facts
from ory_wsgi.pipeline.services import Services
from ory_wsgi.settings import Settings, load_settings
from ory_wsgi.wsgi import StartResponse, WSGIEnvironment

PUBLIC_URL = "https://app.example.com"


def services(ory_url: str, settings: Settings | None = None, *, ttl: float = 10.0) -> Services:
    settings = settings or load_settings(env={}, overrides={"sdk_url": ory_url})
    return Services(
        settings=settings,
        public_url=PUBLIC_URL,
        keys=None,
        client=OryClient(ory_url, timeout=1.0, failure_threshold=1000),
        cache=SessionCache(ttl=ttl),
        cookie_names=session_cookie_names(ory_url),
    )


class StandInNoop:
    """Until the mutators package is merged beside this branch, rules need one mutator."""

    name = "noop"

    def __init__(self, services: Services) -> None:
        del services

    def prepare(self, config: Any, where: str) -> None:
        return None

    def mutate(self, request: Any, session: Any, prepared: Any) -> None:
        return None


def registry(services: Services, errors: dict[str, type[Any]] | None = None) -> Registry:
    """Every real handler (and `errors` besides); `noop` stands in only while the
    mutators package is absent."""
    extra: dict[str, dict[str, type[Any]]] = {"errors": dict(errors or {})}
    if "noop" not in default_registry(services).mutators:
        extra["mutators"] = {"noop": StandInNoop}
    return default_registry(services, extra=extra)


def adapter(pipeline: Pipeline) -> Any:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        try:
            facts = request_facts(environ)
        except BadRequest:
            start_response("400 Bad Request", [("Content-Type", "text/plain")])
            return [b"bad request"]
        decision = pipeline.decide(facts)
        if isinstance(decision, Allow):
            body = json.dumps(
                {
                    "rule": decision.rule.id,
                    "subject": decision.session.subject,
                    "authenticator": decision.session.authenticator,
                    "headers": decision.headers,
                    "state": decision.state.decision,
                }
            ).encode()
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body]

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            rule = decision.rule.id if decision.rule else ""
            return start_response(
                status, [*headers, ("X-Rule", rule), ("X-Handler", decision.handler)]
            )

        return decision.error(environ, start)

    return app


def client(pipeline: Pipeline) -> Client:
    # use_cookies=False: the Cookie header a test sets is sent as it is.
    return Client(adapter(pipeline), use_cookies=False)
