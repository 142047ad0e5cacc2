"""`json` error handler: the error in Kratos' JSON envelope (Oathkeeper's `json`).

    errors = [{handler = "json", config = {verbose = true}}]

`{"error": {"code": 401, "status": "Unauthorized", "message": "..."}}` with
the error's own headers (`WWW-Authenticate`, `Retry-After`, ...), always JSON
whatever the client accepts. `verbose` adds the error's `id`, `reason` and
`details`. An error that carries its own body (Kratos' whoami 401 byte for
byte, the AAL step-up answer) is passed as it is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from ory_wsgi.pipeline.error_handlers.when import ConditionalHandler, When, compile_when
from ory_wsgi.pipeline.errors import DecisionError
from ory_wsgi.pipeline.handler import Config
from ory_wsgi.pipeline.handler_config import boolean, known_keys
from ory_wsgi.pipeline.state import RequestFacts


@dataclass(frozen=True, slots=True)
class PreparedJson:
    when: When
    verbose: bool


class JsonErrorHandler(ConditionalHandler):
    name = "json"

    def prepare(self, config: Config, where: str) -> PreparedJson:
        known_keys(config, ("verbose", "when"), where)
        return PreparedJson(
            compile_when(config.get("when"), where, self.trusted),
            boolean(config, "verbose", where),
        )

    def answer(self, request: RequestFacts, error: DecisionError, prepared: Any) -> DecisionError:
        assert isinstance(prepared, PreparedJson)
        if error.body is not None:
            return error
        envelope: dict[str, Any] = {}
        if prepared.verbose and error.error_id:
            envelope["id"] = error.error_id
        envelope["code"] = error.status
        envelope["status"] = HTTPStatus(error.status).phrase
        if prepared.verbose and error.reason:
            envelope["reason"] = error.reason
        if prepared.verbose and error.details:
            envelope["details"] = error.details
        envelope["message"] = error.message
        body = json.dumps({"error": envelope}, separators=(",", ":"), default=str).encode()
        return DecisionError(
            error.status,
            error.error_id,
            error.message,
            headers=error.headers,
            body=body,
            kind=error.kind,
            reason=error.reason,
            details=error.details,
        )
