"""The protection decision for one view: the framework decorators' `login_required`.

    gate = SessionGate(public_url)
    answer = gate.check(environ, aal="aal2")     # None: serve the view

Runs after the embedded middleware's `Decide` layer, from what it left in
`environ` (`ory.session`, `ory.error`, `ory.aal_required`, `ory.target`),
and answers as a `[[protect]]` rule does, with the session authenticator's
own answers: no session → a browser navigating is sent to Ory's login (303,
`return_to` = this page, built from the public URL), anything else gets
Kratos' whoami 401 byte for byte; a session below `aal` → the step-up 303 or
403; Ory unreachable → 503, rate-limiting → 429 (fail closed). No method is
exempt: a view that accepts OPTIONS runs its code for it (CORS preflights
never get here, the middleware answers them).
"""

from __future__ import annotations

import logging
from urllib.parse import quote

from ory_wsgi.answers import wants_html
from ory_wsgi.middleware import Answer, run_layers
from ory_wsgi.pipeline.authenticators.session import (
    AAL_RANK,
    return_to_url,
    step_up,
    unauthorized,
)
from ory_wsgi.pipeline.errors import DecisionError
from ory_wsgi.wsgi import WSGIEnvironment

log = logging.getLogger("ory_wsgi.protect")


class SessionGate:
    def __init__(self, public_url: str) -> None:
        self.public_url = public_url.rstrip("/")
        self.login_url = f"{self.public_url}/.ory/self-service/login/browser"

    def check(self, environ: WSGIEnvironment, aal: str = "") -> Answer | None:
        error = self._refusal(environ, aal)
        if error is None:
            environ["ory.decision"] = "allow"
            return None
        return run_layers(error, environ)

    def _refusal(self, environ: WSGIEnvironment, aal: str) -> DecisionError | None:
        browser = environ.get("REQUEST_METHOD") in ("GET", "HEAD") and wants_html(environ)
        target = environ.get("ory.target") or "/"
        session = environ.get("ory.session")
        if session is not None:
            have = session.get("authenticator_assurance_level", "aal1")
            if not aal or AAL_RANK.get(have, 0) >= AAL_RANK[aal]:
                return None
            environ["ory.decision"] = "step_up"
            return step_up(self.public_url, target, browser, aal)
        error = environ.get("ory.error")
        if error == "rate_limited":
            environ["ory.decision"] = "rate_limited"
            return DecisionError(
                429,
                "rate_limited",
                "Too many requests, try again later.",
                headers=[("Retry-After", environ.get("ory.retry_after") or "1")],
            )
        if error:
            environ["ory.decision"] = "unavailable"
            log.error("ory_unavailable: refusing protected view %s", target[:200])
            return DecisionError(
                503,
                "ory_unavailable",
                "The login service is unavailable, try again shortly.",
                headers=[("Retry-After", "5")],
            )
        if environ.get("ory.aal_required"):
            environ["ory.decision"] = "step_up"
            return step_up(self.public_url, target, browser, "aal2")
        environ["ory.decision"] = "login"
        if not browser:
            return unauthorized()
        return_to = quote(return_to_url(self.public_url, target), safe="")
        return DecisionError(
            303,
            "unauthorized",
            "Log in to see this page.",
            headers=[("Location", f"{self.login_url}?return_to={return_to}")],
            body=b"",
            content_type="",
        )
