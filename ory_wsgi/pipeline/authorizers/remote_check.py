"""What `remote` and `remote_json` share: POST to `remote`, the answer's status decides.

    check = prepare_check(config, where, endpoints, max_delay=0.1)    # at load
    run_check(check, request, session, context, body, "application/json")   # per request

At load: `remote` (an http(s) URL), `headers` (templates), `retry`
(`max_delay`, `give_up_after`) and `forward_response_headers_to_upstream`.
Per request the body is POSTed with its `Content-Type`, the client's
`Authorization` (as Oathkeeper sends it; a `headers` template of that name
replaces it) and the rendered `headers`. Then:
- 200: allowed; each header named in `forward_response_headers_to_upstream`
  is set on the upstream request (`session.header`) to the answer's value,
  or empty when the answer has none (the client's own never goes through);
- 403: 403 forbidden;
- 429: passed on with the service's `Retry-After` (and `X-RateLimit-*`);
- anything else, or no answer before `give_up_after`: 503 with
  `Retry-After: 5` and one log line (closed).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ory_wsgi.pipeline.errors import DecisionError
from ory_wsgi.pipeline.handler import Config
from ory_wsgi.pipeline.handler_config import canonical_header_name, string, string_list
from ory_wsgi.pipeline.service_call import (
    Endpoint,
    Endpoints,
    Retry,
    forward_headers,
    parse_retry,
    post,
    rate_limited,
    render_headers,
    template_headers,
    unavailable,
)
from ory_wsgi.pipeline.state import AuthSession, RequestFacts
from ory_wsgi.rules.template import Template, TemplateContext

log = logging.getLogger("ory_wsgi.pipeline")


@dataclass(frozen=True, slots=True)
class RemoteCheck:
    where: str
    endpoint: Endpoint
    headers: tuple[tuple[str, Template], ...]
    forward: tuple[str, ...]
    retry: Retry


def prepare_check(
    config: Config, where: str, endpoints: Endpoints, *, max_delay: float
) -> RemoteCheck:
    retry = parse_retry(config, where, max_delay=max_delay)
    forward = string_list(
        config.get("forward_response_headers_to_upstream"),
        f"{where} forward_response_headers_to_upstream",
    )
    return RemoteCheck(
        where,
        endpoints.get(string(config, "remote", where), retry.max_delay, where, key="remote"),
        template_headers(config, where),
        tuple(canonical_header_name(name) for name in forward),
        retry,
    )


def run_check(
    check: RemoteCheck,
    request: RequestFacts,
    session: AuthSession,
    context: TemplateContext,
    body: bytes,
    content_type: str,
) -> None:
    """Return when the service allows; raise DecisionError otherwise."""
    headers: dict[str, str] = {}
    if content_type:
        headers["Content-Type"] = content_type
    authorization = request.headers.getlist("Authorization")
    if authorization:
        headers["Authorization"] = authorization[0]
    render_headers(check.headers, context, check.where, headers)
    answer = post(check.endpoint, headers, body, where=check.where, retry=check.retry)
    if answer.status == 200:
        forward_headers(answer, check.forward, session.header, check.where)
        return
    if answer.status == 403:
        raise DecisionError(403, "forbidden", "Access is denied.")
    if answer.status == 429:
        raise rate_limited(answer, check.where, check.endpoint.url)
    log.error(
        "%s: %s answered %d; refused with 503", check.where, check.endpoint.url, answer.status
    )
    raise unavailable()
