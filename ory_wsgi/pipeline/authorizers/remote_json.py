"""`remote_json`: POST a templated JSON payload to an API; its status decides (Oathkeeper).

    [rule.authorizer]
    handler = "remote_json"
    config = { remote = "http://authz:8080/check",
               payload = '{"subject": "{{ .Subject }}", "path": "{{ .MatchContext.URL.Path }}"}',
               headers = { X-Api-Key = "secret" },
               forward_response_headers_to_upstream = ["X-Tenant"],
               retry = { max_delay = "100ms", give_up_after = "1s" } }

`payload` and the `headers` values are templates compiled at load (`payload`
with JSON escaping, so a session value cannot add keys); a payload that does
not render to JSON is refused with 500. The client's `Authorization` header
goes along (as in Oathkeeper) unless `headers` sets one. Per request:
- 200: allowed; the response headers named in
  `forward_response_headers_to_upstream` are set on the upstream request;
- 403: 403 forbidden;
- 429: passed on with its `Retry-After`;
- anything else, or no answer: 503 with `Retry-After: 5` and one log line.
The call and the answers are `ory_wsgi.pipeline.authorizers.remote_check`'s
(shared with `remote`). Nothing is cached: the payload may hold anything of the request.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from ory_wsgi.errors import ConfigError
from ory_wsgi.pipeline.authorizers.remote_check import RemoteCheck, prepare_check, run_check
from ory_wsgi.pipeline.errors import internal
from ory_wsgi.pipeline.handler import Config
from ory_wsgi.pipeline.handler_config import known_keys, string
from ory_wsgi.pipeline.header_values import render
from ory_wsgi.pipeline.mutators.context import template_context
from ory_wsgi.pipeline.service_call import Endpoints
from ory_wsgi.pipeline.services import Services
from ory_wsgi.pipeline.state import AuthSession, RequestFacts
from ory_wsgi.rules.template import Template, compile_template

log = logging.getLogger("ory_wsgi.pipeline")

KEYS = ("remote", "payload", "headers", "forward_response_headers_to_upstream", "retry")


@dataclass(frozen=True, slots=True)
class Prepared:
    check: RemoteCheck
    payload: Template


class RemoteJson:
    name = "remote_json"

    def __init__(self, services: Services) -> None:
        del services
        self._endpoints = Endpoints()

    def prepare(self, config: Config, where: str) -> Prepared:
        known_keys(config, KEYS, where)
        payload = string(config, "payload", where)
        if not payload:
            raise ConfigError(f"{where}: payload must be a JSON template (a string)")
        return Prepared(
            prepare_check(config, where, self._endpoints, max_delay=0.1),
            compile_template(payload, where=f"{where} payload", json=True),
        )

    def authorize(self, request: RequestFacts, session: AuthSession, prepared: Prepared) -> None:
        context = template_context(session)
        where = prepared.check.where
        payload = render(prepared.payload, context, where)
        try:
            json.loads(payload)
        except ValueError as exc:
            log.error("%s: the payload did not render to JSON (%s); refused", where, exc)
            raise internal("The authorizer's payload is not JSON") from None
        run_check(prepared.check, request, session, context, payload.encode(), "application/json")
