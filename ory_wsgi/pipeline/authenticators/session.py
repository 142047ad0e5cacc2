"""`cookie_session` and `bearer_token`: Kratos' whoami, through the worker's session cache.

    [authenticators.cookie_session]
    enabled = true
    config = { required_aal = "aal2" }

Both ask Kratos exactly as the proxy always has: one whoami carrying every
credential the request holds (`X-Session-Token`, the session cookie and the
`ory_*` cookies, `Authorization: Bearer`; see `ory_wsgi.ory.client.extract_credentials`),
answered from the per-worker `SessionCache` when it can be. They differ only
in when they are responsible: `cookie_session` when a session cookie is there
(one named in `only`, when given), `bearer_token` when a bearer token or an
`X-Session-Token` is. A second one in the same rule hits the cache.

Accepted: `subject_from` (default `identity.id`) and `extra_from` (default
`@this`, the whole session) as dotted paths; our `required_aal` (a session
below it gets Kratos' step-up answer); `optional` (ours, used by `[[public]]`:
a refused credential or an unreachable Ory makes this authenticator not
responsible instead of refusing, so the next one, usually `noop`, applies).
Oathkeeper's transport keys (`check_session_url`, `preserve_path`, ...) are
accepted and ignored: the session is always asked of `[ory]`'s Kratos.

Answers, as `[[protect]]` always gave them:
- no session (Kratos 401, an inactive session): 401, Kratos' whoami body byte
  for byte, `WWW-Authenticate: Bearer` (error handlers may turn it into a login redirect);
- a session below `required_aal`, or Kratos' own `session_aal2_required`: a
  browser navigating is sent to the login flow with `aal=` (303); anything
  else gets 403 `session_aal2_required` with `redirect_browser_to`;
- Ory unreachable: 503 with `Retry-After: 5`; Ory rate-limiting: 429 with its `Retry-After`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from ory_wsgi.answers import wants_html
from ory_wsgi.errors import ConfigError
from ory_wsgi.ory.client import Credentials, Lookup, extract_credentials
from ory_wsgi.pipeline.errors import DecisionError, NotResponsible, internal
from ory_wsgi.pipeline.handler import Config
from ory_wsgi.pipeline.services import Services
from ory_wsgi.pipeline.state import AuthSession, RequestFacts

log = logging.getLogger("ory_wsgi.protect")

AAL_RANK = {"aal0": 0, "aal1": 1, "aal2": 2, "aal3": 3}
# Kratos' own whoami 401, byte for byte, so that clients written for Kratos understand it.
KRATOS_UNAUTHORIZED = json.dumps(
    {
        "error": {
            "code": 401,
            "status": "Unauthorized",
            "reason": "No valid session credentials found in the request.",
            "message": "The request could not be authorized",
        }
    },
    separators=(",", ":"),
).encode()
# Oathkeeper's keys about how to call the session endpoint: we always use [ory]'s client.
IGNORED_KEYS = frozenset(
    {
        "check_session_url",
        "preserve_path",
        "preserve_query",
        "preserve_host",
        "forward_http_headers",
        "additional_headers",
        "force_method",
        "method",
        "token_from",
        "prefix",
    }
)
KNOWN_KEYS = frozenset({"subject_from", "extra_from", "required_aal", "optional", "only"})


def unauthorized() -> DecisionError:
    """No session: Kratos' whoami 401, as Kratos' own clients expect it."""
    return DecisionError(
        401,
        "unauthorized",
        "The request could not be authorized",
        headers=[("WWW-Authenticate", "Bearer")],
        body=KRATOS_UNAUTHORIZED,
    )


@dataclass(frozen=True, slots=True)
class SessionConfig:
    subject_from: tuple[str, ...]
    extra_from: tuple[str, ...]  # () is `@this`
    required_aal: str
    optional: bool
    only: frozenset[str]


class SessionAuthenticator:
    """What `cookie_session` and `bearer_token` share; `responsible` is theirs."""

    name = ""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.client = services.client
        self.cache = services.cache
        self.cookie_names = services.cookie_names

    def prepare(self, config: Config, where: str) -> SessionConfig:
        unknown = sorted(set(config) - KNOWN_KEYS - IGNORED_KEYS)
        if unknown:
            raise ConfigError(f"{where}: unknown config key {unknown[0]!r}")
        if self.client is None or self.cache is None:
            raise ConfigError(f"{where}: needs Ory ([ory] sdk_url or project)")
        aal = config.get("required_aal", "")
        if aal and aal not in ("aal1", "aal2", "aal3"):
            raise ConfigError(f"{where}: required_aal must be aal1, aal2 or aal3, got {aal!r}")
        only = config.get("only", ())
        if not isinstance(only, list | tuple) or not all(isinstance(n, str) for n in only):
            raise ConfigError(f"{where}: only must be a list of cookie names")
        optional = config.get("optional", False)
        if not isinstance(optional, bool):
            raise ConfigError(f"{where}: optional must be true or false")
        return SessionConfig(
            subject_from=_path(config.get("subject_from", "identity.id"), where, "subject_from"),
            extra_from=_path(config.get("extra_from", "@this"), where, "extra_from"),
            required_aal=aal,
            optional=optional,
            only=frozenset(only),
        )

    def responsible(
        self, request: RequestFacts, credentials: Credentials, config: SessionConfig
    ) -> bool:
        raise NotImplementedError

    def authenticate(self, request: RequestFacts, session: AuthSession, prepared: Any) -> None:
        config: SessionConfig = prepared
        credentials = request.credentials
        if credentials is None and not request.anonymous:  # the adapter did not read them
            credentials = extract_credentials(request.environ, self.cookie_names)
        if credentials is None or not self.responsible(request, credentials, config):
            raise NotResponsible
        assert self.client is not None and self.cache is not None  # checked in prepare
        client = self.client
        request_id = request.request_id
        lookup = self.cache.get(credentials, lambda: client.whoami(credentials, request_id))
        try:
            self._accept(request, session, config, lookup)
        except DecisionError as error:
            if not config.optional:
                raise
            if error.error_id in ("ory_unavailable", "rate_limited"):
                session.ory_error = error.error_id
            elif lookup.outcome == "aal2_required":
                session.aal_required = True
            raise NotResponsible from None

    def _accept(
        self, request: RequestFacts, session: AuthSession, config: SessionConfig, lookup: Lookup
    ) -> None:
        if lookup.outcome == "authenticated" and lookup.session is not None:
            data = lookup.session
            have = data.get("authenticator_assurance_level", "aal1")
            needed = config.required_aal
            if needed and AAL_RANK.get(have, 0) < AAL_RANK[needed]:
                raise self.step_up(request, needed)
            subject = _lookup(data, config.subject_from)
            if not isinstance(subject, str) or not subject:
                log.error(
                    "%s: the session has no subject at %s", self.name, ".".join(config.subject_from)
                )
                raise internal("The session has no subject.")
            extra = _lookup(data, config.extra_from)
            session.subject = subject
            session.extra = extra if isinstance(extra, dict) else {}
            session.ory_session = data
            session.authenticator = self.name
            return
        if lookup.outcome == "aal2_required":
            raise self.step_up(request, "aal2")
        if lookup.outcome == "rate_limited":
            raise DecisionError(
                429,
                "rate_limited",
                "Too many requests, try again later.",
                headers=[("Retry-After", lookup.retry_after or "1")],
            )
        if lookup.outcome == "error":
            raise DecisionError(
                503,
                "ory_unavailable",
                "The login service is unavailable, try again shortly.",
                headers=[("Retry-After", "5")],
            )
        raise unauthorized()

    def step_up(self, request: RequestFacts, aal: str) -> DecisionError:
        """Kratos' `session_aal2_required` for this request (see `step_up`)."""
        return step_up(self.services.public_url, request.target, navigating(request), aal)


class CookieSession(SessionAuthenticator):
    """Responsible when the request carries a session cookie (one named in `only`, if given)."""

    name = "cookie_session"

    def responsible(
        self, request: RequestFacts, credentials: Credentials, config: SessionConfig
    ) -> bool:
        if not credentials.cookie:
            return False
        names = config.only or self.cookie_names
        for piece in credentials.cookie.split("; "):
            name, _, value = piece.partition("=")
            if value and name in names:
                return True
        return False


class BearerToken(SessionAuthenticator):
    """Responsible when the request carries `Authorization: Bearer` or `X-Session-Token`."""

    name = "bearer_token"

    def responsible(
        self, request: RequestFacts, credentials: Credentials, config: SessionConfig
    ) -> bool:
        return bool(credentials.bearer or credentials.session_token)


def navigating(request: RequestFacts) -> bool:
    """A browser loading a page (GET/HEAD preferring HTML): it can follow a login redirect."""
    if request.method not in ("GET", "HEAD"):
        return False
    return wants_html({"HTTP_ACCEPT": ", ".join(request.headers.getlist("Accept"))})


def step_up(public_url: str, target: str, browser: bool, aal: str) -> DecisionError:
    """Kratos' `session_aal2_required`: a redirect for a browser, 403 with where to go else."""
    login_url = f"{public_url}/.ory/self-service/login/browser"
    location = f"{login_url}?aal={aal}&return_to=" + quote(
        return_to_url(public_url, target), safe=""
    )
    if browser:
        return DecisionError(
            303,
            "session_aal2_required",
            "Session does not fulfill the requested Authenticator Assurance Level",
            headers=[("Location", location)],
            body=b"",
            content_type="",
            kind="forbidden",
        )
    error: dict[str, Any] = {
        "id": "session_aal2_required",
        "code": 403,
        "status": "Forbidden",
        "reason": f"This page needs a session with authenticator assurance level {aal}.",
        "details": {"redirect_browser_to": location},
        "message": "Session does not fulfill the requested Authenticator Assurance Level",
    }
    body = json.dumps({"error": error, "redirect_browser_to": location}, separators=(",", ":"))
    return DecisionError(
        403,
        "session_aal2_required",
        "Session does not fulfill the requested Authenticator Assurance Level",
        headers=[("Ory-Error-Id", "session_aal2_required")],
        body=body.encode(),
    )


def return_to_url(public_url: str, target: str) -> str:
    """The public URL of this request, built from the public URL, never from Host."""
    # A target can only be a path here; refuse anything that parses as another origin.
    if urlsplit(target).netloc or not target.startswith("/") or target.startswith("//"):
        target = "/"
    return public_url + target


def _path(value: object, where: str, key: str) -> tuple[str, ...]:
    """A GJSON path of the simple kind Kratos rules use: `a.b.c`, or `@this` for all."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: {key} must be a non-empty string")
    if value == "@this":
        return ()
    parts = tuple(value.split("."))
    if any(not part or any(c in part for c in "*?#@|\\") for part in parts):
        raise ConfigError(
            f"{where}: {key}: only dotted paths and @this are supported, not {value!r}"
        )
    return parts


def _lookup(data: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = data
    for part in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value
