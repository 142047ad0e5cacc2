"""The Pipeline as the one WSGI layer the three modes wrap around what they serve.

    app = Decide(app, pipeline, cookie_names=..., cache_control="private, no-store")

It replaces the old stack (PathCheck, SessionLookup, Protect, SessionToken)
in `ory_wsgi.layers.ory_layers`, which the proxy (`make_app`), the decisions
endpoint and the embedded middleware all use, so the three decide alike.
A refusal is answered here (the `Deny`'s own answer; the decisions endpoint
maps it to 200/401/403). An allowed request goes on with:
- `environ["ory.state"]` (`RequestState`), and for apps and the layers
  outside the public keys `ory.session`, `ory.identity`, `ory.subject`,
  `ory.credentials`, `ory.decision`, `ory.error` (Ory down or rate-limiting
  on an open path), `ory.aal_required`, `ory.target` (the checked target);
  in-process, `ory.path_info` (the path the app must route on);
- the client's `Authorization` taken out; `ory.authorization` is what the
  upstream or app gets instead: the `id_token`, or with
  `[jwt] keep_client_authorization` an anonymous client's own header;
- the other mutator headers set in `environ` as request headers, and listed
  in `ory.upstream_headers` for the decisions endpoint's 200;
- `[proxy] protected_cache_control` on a response to a rule that needs a
  credential, when the response has no Cache-Control.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from ory_wsgi.answers import error_answer
from ory_wsgi.errors import BadRequest
from ory_wsgi.ory.client import extract_credentials
from ory_wsgi.overrides import PATH_OVERRIDE_KEYS
from ory_wsgi.paths import EMBEDDED_KEY, app_relative_path, wsgi_path
from ory_wsgi.pipeline.decision import Allow, Pipeline
from ory_wsgi.pipeline.request import request_facts
from ory_wsgi.pipeline.shorthand import ShorthandIndex
from ory_wsgi.pipeline.state import STATE_KEY
from ory_wsgi.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger("ory_wsgi.protect")

# What `ory.decision` (access log, metrics) says for each refusal.
DECISIONS = {
    "unauthorized": "login",
    "session_aal2_required": "step_up",
    "ory_unavailable": "unavailable",
    "rate_limited": "rate_limited",
}
# Refusals that are an error of their own in the access log (`ory.error`).
LOGGED_ERRORS = frozenset(
    {"ory_unavailable", "rate_limited", "bad_request", "internal_server_error", "rules_not_loaded"}
)


class Decide:
    def __init__(
        self,
        app: WSGIApplication,
        pipeline: Pipeline,
        *,
        cookie_names: frozenset[str],
        keep_client_authorization: bool = False,
        cache_control: str = "",
        shorthand: ShorthandIndex | None = None,
    ) -> None:
        self.app = app
        self.pipeline = pipeline
        self.cookie_names = cookie_names
        self.keep_client_authorization = keep_client_authorization
        self.cache_control = cache_control
        self.shorthand = shorthand

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        credentials = extract_credentials(environ, self.cookie_names)
        try:
            facts = request_facts(environ, credentials=credentials, anonymous=credentials is None)
            if environ.get(EMBEDDED_KEY):
                relative = app_relative_path(
                    facts.target.partition("?")[0], environ.get("SCRIPT_NAME", "")
                )
                environ["ory.path_info"] = wsgi_path(relative)
        except BadRequest as exc:
            log.warning("bad_request: %s: %r", exc, environ.get("RAW_URI", "")[:200])
            environ["ory.error"] = "bad_request"
            return error_answer(environ, start_response, 400, f"Malformed request: {exc}.")
        for key in PATH_OVERRIDE_KEYS:
            environ.pop(key, None)
        environ["ory.target"] = facts.target
        environ["ory.match_path"] = facts.path.match
        environ["ory.credentials"] = credentials
        decision = self.pipeline.decide(facts)
        environ[STATE_KEY] = decision.state
        if self.shorthand is not None and decision.rule is not None:
            environ["ory.rule"] = self.shorthand.compiled(decision.rule.id)
        if not isinstance(decision, Allow):
            cause = decision.cause.error_id
            environ["ory.decision"] = DECISIONS.get(cause, "deny")
            environ["ory.session"] = decision.state.session
            if cause in LOGGED_ERRORS:
                environ["ory.error"] = cause
            return decision.error(environ, start_response)
        return self._allow(environ, start_response, decision)

    def _allow(
        self, environ: WSGIEnvironment, start_response: StartResponse, decision: Allow
    ) -> Iterable[bytes]:
        session = decision.session
        ory_session = session.ory_session
        environ["ory.session"] = ory_session
        environ["ory.identity"] = ory_session.get("identity") if ory_session else None
        if ory_session is not None and session.subject:
            environ["ory.subject"] = session.subject
        if session.ory_error:
            environ["ory.error"] = session.ory_error
        if session.aal_required:
            environ["ory.aal_required"] = True
        if decision.protected or self.shorthand is None:
            # An open path of the shorthand was never a decision ("none" in metrics).
            environ["ory.decision"] = "allow"
        client_authorization = environ.pop("HTTP_AUTHORIZATION", None)
        headers = decision.headers
        upstream: dict[str, str] = {}
        for name, value in headers.items():
            if name.lower() == "authorization":
                environ["ory.authorization"] = value
            else:
                upstream[name] = value
                environ["HTTP_" + name.upper().replace("-", "_")] = value
        if (
            "ory.authorization" not in environ
            and ory_session is None
            and client_authorization
            and self.keep_client_authorization
        ):
            environ["ory.authorization"] = client_authorization
        if upstream:
            environ["ory.upstream_headers"] = upstream
        if decision.protected and self.cache_control:
            start_response = self._uncached(start_response)
        return self.app(environ, start_response)

    def _uncached(self, start_response: StartResponse) -> StartResponse:
        """A member page must not come back from the browser's cache after logout."""
        cache_control = self.cache_control

        def uncached(status: str, headers: list[tuple[str, str]], *exc_info: Any) -> Any:
            if not any(name.lower() == "cache-control" for name, _ in headers):
                headers.append(("Cache-Control", cache_control))
            return start_response(status, headers, *exc_info)

        return uncached
