"""FakeKratos: a small in-memory Kratos (public API and a plain HTML UI) as a thread-safe WSGI app.

It answers like Kratos does (see docs in KRATOS.md): whoami with the three credential kinds, the
error envelope, browser and API flows (login, registration, settings, recovery, verification),
the user's session list, the two-step browser logout and the native one, and the
`Ory-Base-URL-Rewrite` header Ory Network honours, so that a proxy can put it under `/.ory`.
Recovery and verification codes are not sent anywhere: they land in `outbox` and on `/ui/mail`.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from ory_wsgi.testing.account import AccountFlows
from ory_wsgi.testing.documents import (
    DEFAULT_SCHEMA_ID,
    KratosError,
    rfc3339,
    schema_document,
    schema_url,
)
from ory_wsgi.testing.responses import Call, json_response
from ory_wsgi.testing.store import LoggedRequest
from ory_wsgi.testing.ui import UiPages
from ory_wsgi.testing.whoami import WhoamiEndpoint
from ory_wsgi.wsgi import StartResponse, WSGIEnvironment

_FLOW_KINDS = ("login", "registration", "settings", "recovery", "verification")
# Endpoints whose errors a browser sees as a 303 to the error UI instead of the JSON envelope.
_BROWSER_ERROR_ENDPOINTS = frozenset(
    {
        "logout",
        *(f"{kind}_{step}" for kind in _FLOW_KINDS for step in ("browser", "submit")),
    }
)


class FakeKratos(WhoamiEndpoint, AccountFlows, UiPages):
    """A local Ory (Kratos) stand-in: identities and sessions in memory, safe across threads.

    >>> kratos = FakeKratos("http://127.0.0.1:4433")
    >>> identity = kratos.add_identity("ada@example.com", "correct horse")
    >>> session, token = kratos.create_session(identity["id"])

    Tests control it through methods (add_identity, create_session, expire_session,
    deactivate_identity, require_aal2), read `whoami_calls` and `request_log`, and inject faults
    into whoami (fail_whoami, fail_next, garble_whoami, drop_whoami, `whoami_delay`).
    `login_hint` is a line shown above the login form (the demo names its account there);
    with a `default_return_url`, every flow page links back to it ("Back to the app").
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
        login_hint: str = "",
    ) -> None:
        super().__init__(
            base_url,
            cookie_name=cookie_name,
            secure_cookies=secure_cookies,
            allowed_return_urls=allowed_return_urls,
            default_return_url=default_return_url,
            session_lifespan=session_lifespan,
            rewrite_token=rewrite_token,
            login_hint=login_hint,
        )
        rules = [
            Rule("/sessions/whoami", endpoint="whoami", methods=["GET"]),
            Rule("/sessions", endpoint="sessions", methods=["GET"]),
            Rule("/sessions", endpoint="sessions_revoke_others", methods=["DELETE"]),
            Rule("/sessions/<session_id>", endpoint="session_revoke", methods=["DELETE"]),
            Rule("/self-service/logout/browser", endpoint="logout_browser", methods=["GET"]),
            Rule("/self-service/logout/api", endpoint="logout_api", methods=["DELETE"]),
            Rule("/self-service/logout", endpoint="logout", methods=["GET"]),
            Rule("/self-service/errors", endpoint="errors", methods=["GET"]),
            Rule("/schemas/<schema_id>", endpoint="schema", methods=["GET"]),
            Rule("/health/alive", endpoint="health", methods=["GET"]),
            Rule("/health/ready", endpoint="health", methods=["GET"]),
            Rule("/ui/welcome", endpoint="ui_welcome", methods=["GET"]),
            Rule("/ui/error", endpoint="ui_error", methods=["GET"]),
            Rule("/ui/mail", endpoint="ui_mail", methods=["GET"]),
        ]
        for kind in _FLOW_KINDS:
            base = f"/self-service/{kind}"
            rules += [
                Rule(f"{base}/browser", endpoint=f"{kind}_browser", methods=["GET"]),
                Rule(f"{base}/api", endpoint=f"{kind}_api", methods=["GET"]),
                Rule(f"{base}/flows", endpoint=f"{kind}_flow", methods=["GET"]),
                Rule(base, endpoint=f"{kind}_submit", methods=["POST"]),
                Rule(f"/ui/{kind}", endpoint=f"ui_{kind}", methods=["GET"]),
            ]
        self._routes = Map(rules)
        self._handlers: dict[str, Callable[[Call], Response]] = {
            "whoami": self._whoami,
            "sessions": self._list_sessions,
            "sessions_revoke_others": self._revoke_other_sessions,
            "session_revoke": self._revoke_session,
            "logout_browser": self._logout_browser,
            "logout_api": self._logout_api,
            "logout": self._logout,
            "errors": self._get_error,
            "schema": self._schema,
            "health": lambda call: json_response({"status": "ok"}),
            "ui_welcome": self._ui_welcome,
            "ui_error": self._ui_error,
            "ui_mail": self._ui_mail,
        }
        for kind in _FLOW_KINDS:
            self._handlers.update(self._flow_handlers(kind))

    def _flow_handlers(self, kind: str) -> dict[str, Callable[[Call], Response]]:
        """The five endpoints of one self-service flow kind: browser, api, flows, submit, UI."""
        ui: Callable[[Call], Response] = lambda call: self._ui_flow(call, kind)  # noqa: E731
        if kind in ("login", "registration"):
            return {
                f"{kind}_browser": lambda call: self._start_flow(call, kind, "browser"),
                f"{kind}_api": lambda call: self._start_flow(call, kind, "api"),
                f"{kind}_flow": lambda call: self._get_flow(call, kind),
                f"{kind}_submit": lambda call: self._submit_flow(call, kind),
                f"ui_{kind}": ui,
            }
        if kind == "settings":
            return {
                "settings_browser": lambda call: self._start_settings(call, "browser"),
                "settings_api": lambda call: self._start_settings(call, "api"),
                "settings_flow": lambda call: self._get_account_flow(call, "settings"),
                "settings_submit": self._submit_settings,
                "ui_settings": ui,
            }
        return {
            f"{kind}_browser": lambda call: self._start_code_flow(call, kind, "browser"),
            f"{kind}_api": lambda call: self._start_code_flow(call, kind, "api"),
            f"{kind}_flow": lambda call: self._get_account_flow(call, kind),
            f"{kind}_submit": lambda call: self._submit_code_flow(call, kind),
            f"ui_{kind}": ui,
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
