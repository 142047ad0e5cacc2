"""FakeKratos: a small in-memory Kratos (public API and a plain HTML UI) as a thread-safe WSGI app.

It answers like Kratos does (see docs in KRATOS.md): whoami with the three credential kinds, the
error envelope, browser and API login/registration flows, the two-step browser logout, and the
`Ory-Base-URL-Rewrite` header Ory Network honours, so that a proxy can put it under `/.ory`.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from ory_wsgi.testing.documents import (
    DEFAULT_SCHEMA_ID,
    KratosError,
    rfc3339,
    schema_document,
    schema_url,
)
from ory_wsgi.testing.flows import FlowEndpoints
from ory_wsgi.testing.responses import Call, json_response
from ory_wsgi.testing.store import LoggedRequest
from ory_wsgi.testing.ui import UiPages
from ory_wsgi.testing.whoami import WhoamiEndpoint
from ory_wsgi.wsgi import StartResponse, WSGIEnvironment

# Endpoints whose errors a browser sees as a 303 to the error UI instead of the JSON envelope.
_BROWSER_ERROR_ENDPOINTS = frozenset(
    {"login_browser", "registration_browser", "login_submit", "registration_submit", "logout"}
)


class FakeKratos(WhoamiEndpoint, FlowEndpoints, UiPages):
    """A local Ory (Kratos) stand-in: identities and sessions in memory, safe across threads.

    >>> kratos = FakeKratos("http://127.0.0.1:4433")
    >>> identity = kratos.add_identity("ada@example.com", "correct horse")
    >>> session, token = kratos.create_session(identity["id"])

    Tests control it through methods (add_identity, create_session, expire_session,
    deactivate_identity, require_aal2), read `whoami_calls` and `request_log`, and inject faults
    into whoami (fail_whoami, fail_next, garble_whoami, drop_whoami, `whoami_delay`).
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        cookie_name: str = "ory_kratos_session",
        secure_cookies: bool = False,
        allowed_return_urls: Iterable[str] = (),
        default_return_url: str | None = None,
        session_lifespan: float = 86400.0,
        rewrite_token: str | None = None,
    ) -> None:
        super().__init__(
            base_url,
            cookie_name=cookie_name,
            secure_cookies=secure_cookies,
            allowed_return_urls=allowed_return_urls,
            default_return_url=default_return_url,
            session_lifespan=session_lifespan,
            rewrite_token=rewrite_token,
        )
        self._routes = Map(
            [
                Rule("/sessions/whoami", endpoint="whoami", methods=["GET"]),
                Rule("/self-service/login/browser", endpoint="login_browser", methods=["GET"]),
                Rule("/self-service/login/api", endpoint="login_api", methods=["GET"]),
                Rule("/self-service/login/flows", endpoint="login_flow", methods=["GET"]),
                Rule("/self-service/login", endpoint="login_submit", methods=["POST"]),
                Rule(
                    "/self-service/registration/browser",
                    endpoint="registration_browser",
                    methods=["GET"],
                ),
                Rule(
                    "/self-service/registration/api", endpoint="registration_api", methods=["GET"]
                ),
                Rule(
                    "/self-service/registration/flows",
                    endpoint="registration_flow",
                    methods=["GET"],
                ),
                Rule(
                    "/self-service/registration", endpoint="registration_submit", methods=["POST"]
                ),
                Rule("/self-service/logout/browser", endpoint="logout_browser", methods=["GET"]),
                Rule("/self-service/logout", endpoint="logout", methods=["GET"]),
                Rule("/self-service/errors", endpoint="errors", methods=["GET"]),
                Rule("/schemas/<schema_id>", endpoint="schema", methods=["GET"]),
                Rule("/health/alive", endpoint="health", methods=["GET"]),
                Rule("/health/ready", endpoint="health", methods=["GET"]),
                Rule("/ui/login", endpoint="ui_login", methods=["GET"]),
                Rule("/ui/registration", endpoint="ui_registration", methods=["GET"]),
                Rule("/ui/welcome", endpoint="ui_welcome", methods=["GET"]),
                Rule("/ui/error", endpoint="ui_error", methods=["GET"]),
                Rule("/ui/settings", endpoint="ui_notice", methods=["GET"]),
                Rule("/ui/recovery", endpoint="ui_notice", methods=["GET"]),
                Rule("/ui/verification", endpoint="ui_notice", methods=["GET"]),
            ]
        )
        self._handlers: dict[str, Callable[[Call], Response]] = {
            "whoami": self._whoami,
            "login_browser": lambda call: self._start_flow(call, "login", "browser"),
            "login_api": lambda call: self._start_flow(call, "login", "api"),
            "login_flow": lambda call: self._get_flow(call, "login"),
            "login_submit": lambda call: self._submit_flow(call, "login"),
            "registration_browser": lambda call: self._start_flow(call, "registration", "browser"),
            "registration_api": lambda call: self._start_flow(call, "registration", "api"),
            "registration_flow": lambda call: self._get_flow(call, "registration"),
            "registration_submit": lambda call: self._submit_flow(call, "registration"),
            "logout_browser": self._logout_browser,
            "logout": self._logout,
            "errors": self._get_error,
            "schema": self._schema,
            "health": lambda call: json_response({"status": "ok"}),
            "ui_login": lambda call: self._ui_flow(call, "login"),
            "ui_registration": lambda call: self._ui_flow(call, "registration"),
            "ui_welcome": self._ui_welcome,
            "ui_error": self._ui_error,
            "ui_notice": self._ui_notice,
        }

    # ----- WSGI -----

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        call = Call(request, self._base_for(request))
        with self._lock:
            self._request_log.append(
                LoggedRequest(
                    request.method,
                    request.path,
                    request.query_string.decode("latin-1"),
                    dict(request.headers.items()),
                )
            )
        endpoint = ""
        try:
            endpoint, call.route_args = self._routes.bind_to_environ(environ).match()
            response = self._handlers[str(endpoint)](call)
        except KratosError as error:
            response = self._error_response(call, error, endpoint in _BROWSER_ERROR_ENDPOINTS)
        except MethodNotAllowed:
            response = self._error_response(call, KratosError(405), False)
        except (NotFound, HTTPException):
            response = self._error_response(call, KratosError(404), False)
        return response(environ, start_response)

    # ----- errors and schemas -----

    def _get_error(self, call: Call) -> Response:
        with self._lock:
            stored = self._errors.get(call.request.args.get("id", ""))
        if stored is None:
            raise KratosError(404, reason="The requested error could not be found.")
        created = rfc3339(stored.created_at)
        return json_response(
            {"id": stored.id, "error": stored.error, "created_at": created, "updated_at": created}
        )

    def _schema(self, call: Call) -> Response:
        schema_id = str(call.route_args.get("schema_id", ""))
        if schema_id in (
            DEFAULT_SCHEMA_ID,
            schema_url(call.base, DEFAULT_SCHEMA_ID).rsplit("/")[-1],
        ):
            return json_response(schema_document(call.base))
        raise KratosError(404, reason="The identity schema could not be found.")

    # ----- internals -----

    def _base_for(self, request: Request) -> str:
        rewrite = request.headers.get("Ory-Base-URL-Rewrite", "").strip()
        if rewrite:
            token = request.headers.get("Ory-Base-URL-Rewrite-Token", "")
            trusted = self.rewrite_token is None or hmac.compare_digest(
                token.encode(), self.rewrite_token.encode()
            )
            parsed = urlsplit(rewrite)
            if trusted and parsed.scheme in ("http", "https") and parsed.netloc:
                return rewrite.rstrip("/")
        return self._base_url or request.host_url.rstrip("/")
