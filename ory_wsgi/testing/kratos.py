"""FakeKratos: a small in-memory Kratos (public API and a plain HTML UI) as a thread-safe WSGI app.

It answers like Kratos does (see docs in KRATOS.md): whoami with the three credential kinds, the
error envelope, browser and API login/registration flows, the two-step browser logout, and the
`Ory-Base-URL-Rewrite` header Ory Network honours, so that a proxy can put it under `/.ory`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import socket
import string
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from html import escape
from typing import Any, NamedTuple
from urllib.parse import quote, urlencode, urljoin, urlsplit

from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from ory_wsgi.testing import pages
from ory_wsgi.testing.documents import (
    DEFAULT_SCHEMA_ID,
    AuthenticationMethod,
    Document,
    FlowRecord,
    IdentityRecord,
    KratosError,
    SessionRecord,
    StoredError,
    flow_document,
    go_cookie,
    go_json,
    identity_document,
    now,
    rfc3339,
    schema_document,
    schema_url,
    session_document,
    session_is_active,
)
from ory_wsgi.wsgi import StartResponse, WSGIEnvironment

_TOKEN_ALPHABET = string.ascii_letters + string.digits
_TOKEN_SHAPE = re.compile(r"(ory_st_)?[A-Za-z0-9]{32}")
_EPOCH_PLUS_ONE = datetime.fromtimestamp(1, UTC)
_CSRF_MAX_AGE = 31536000
_FLOW_LIFESPAN = timedelta(hours=1)
_MIN_PASSWORD_LENGTH = 8
_FLOWS_BEFORE_PRUNING = 1000

SESSION_CACHE_CONTROL = "private, no-cache, no-store, must-revalidate"
JSON_TYPE = "application/json; charset=utf-8"
ERROR_JSON_TYPE = "application/json"
HTML_TYPE = "text/html; charset=utf-8"

# Endpoints whose errors a browser sees as a 303 to the error UI instead of the JSON envelope.
_BROWSER_ERROR_ENDPOINTS = frozenset(
    {"login_browser", "registration_browser", "login_submit", "registration_submit", "logout"}
)


def _random_token(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(32))


def session_cookie_value(token: str) -> str:
    """The session cookie value that stands for `token` (Kratos' cookie carries the token)."""
    return base64.urlsafe_b64encode(token.encode()).rstrip(b"=").decode()


def _token_from_cookie(value: str) -> str | None:
    try:
        decoded = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode("ascii")
    except (ValueError, UnicodeDecodeError):
        return None
    return decoded if _TOKEN_SHAPE.fullmatch(decoded) else None


def _whoami_unauthorized() -> KratosError:
    return KratosError(401, reason="No valid session credentials found in the request.")


def _session_inactive() -> KratosError:
    return KratosError(
        401,
        error_id="session_inactive",
        reason="No active session was found in this request.",
        message="request does not have a valid authentication session",
    )


def _csrf_violation() -> KratosError:
    return KratosError(
        403,
        error_id="security_csrf_violation",
        reason=(
            "Please retry the flow and optionally clear your cookies. The request was rejected to"
            " protect you from Cross-Site-Request-Forgery (CSRF) which could cause account"
            " takeover, leaking personal information, and other serious security issues."
        ),
        details={"docs": "https://www.ory.sh/kratos/docs/debug/csrf"},
        message="the request was rejected to protect you from Cross-Site-Request-Forgery",
    )


class IssuedSession(NamedTuple):
    """What create_session returns: unpacks as `(session, token)`; `.cookie` is the cookie value."""

    session: Document
    token: str

    @property
    def cookie(self) -> str:
        return session_cookie_value(self.token)


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]


@dataclass
class _Fault:
    kind: str  # "status", "garbage" or "close"
    status: int
    remaining: int | None
    retry_after: str = ""


@dataclass(frozen=True)
class _Settings:
    base_url: str | None
    cookie_name: str
    secure_cookies: bool
    allowed_return_urls: tuple[str, ...]
    default_return_url: str | None
    session_lifespan: float
    rewrite_token: str | None


class _Call:
    """One request with what every handler needs: the base URL to emit and the client's wishes."""

    def __init__(self, request: Request, base: str) -> None:
        self.request = request
        self.base = base
        self.route_args: Mapping[str, Any] = {}

    @property
    def wants_json(self) -> bool:
        if self.request.mimetype == "application/json":
            return True
        accepted = self.request.accept_mimetypes.best_match(
            ["text/html", "application/json"], default="text/html"
        )
        return accepted == "application/json"

    @property
    def request_id(self) -> str:
        return self.request.headers.get("X-Request-ID", "")


class _FlowRejected(Exception):
    """A submitted form was refused: the flow is shown again with these messages."""

    def __init__(self, message_id: int, text: str) -> None:
        super().__init__(text)
        self.message = {"id": message_id, "text": text, "type": "error"}


def _redirect(location: str, method: str = "GET") -> Response:
    # Go's http.Redirect writes a small HTML body for GET and HEAD only.
    body = f'<a href="{escape(location)}">See Other</a>.\n\n' if method in ("GET", "HEAD") else ""
    response = Response(body, status=303, content_type=HTML_TYPE)
    response.headers["Location"] = location
    return response


def _json_response(document: Any, status: int = 200) -> Response:
    return Response(go_json(document), status=status, content_type=JSON_TYPE)


def _html_response(text: str, status: int = 200) -> Response:
    return Response(text, status=status, content_type=HTML_TYPE)


class FakeKratos:
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
        self._initial = _Settings(
            base_url=base_url.rstrip("/") if base_url else None,
            cookie_name=cookie_name,
            secure_cookies=secure_cookies,
            allowed_return_urls=tuple(allowed_return_urls),
            default_return_url=default_return_url,
            session_lifespan=session_lifespan,
            rewrite_token=rewrite_token,
        )
        self._lock = threading.RLock()
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
        self._handlers: dict[str, Callable[[_Call], Response]] = {
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
            "health": lambda call: _json_response({"status": "ok"}),
            "ui_login": lambda call: self._ui_flow(call, "login"),
            "ui_registration": lambda call: self._ui_flow(call, "registration"),
            "ui_welcome": self._ui_welcome,
            "ui_error": self._ui_error,
            "ui_notice": self._ui_notice,
        }
        self.reset()

    # ----- configuration and state -----

    def reset(self) -> None:
        """Forget every identity, session, flow, counter and fault; restore the settings."""
        settings = self._initial
        with self._lock:
            self._base_url = settings.base_url
            self.cookie_name = settings.cookie_name
            self.secure_cookies = settings.secure_cookies
            self.allowed_return_urls: list[str] = list(settings.allowed_return_urls)
            self.default_return_url = settings.default_return_url
            self.session_lifespan = settings.session_lifespan
            self.rewrite_token = settings.rewrite_token
            self.whoami_delay = 0.0
            self._identities: dict[str, IdentityRecord] = {}
            self._identity_by_email: dict[str, str] = {}
            self._sessions: dict[str, SessionRecord] = {}
            self._session_by_token: dict[str, str] = {}
            self._flows: dict[str, FlowRecord] = {}
            self._logout_tokens: dict[str, str] = {}
            self._errors: dict[str, StoredError] = {}
            self._fault: _Fault | None = None
            self._whoami_total = 0
            self._whoami_by_kind: Counter[str] = Counter()
            self._whoami_by_token: Counter[str] = Counter()
            self._request_log: deque[LoggedRequest] = deque(maxlen=1000)

    @property
    def base_url(self) -> str | None:
        """Where the stand-in is reached; URLs it emits start with it (or with the rewrite)."""
        return self._base_url

    @base_url.setter
    def base_url(self, value: str | None) -> None:
        self._base_url = value.rstrip("/") if value else None
        if self._initial.base_url is None:
            self._initial = replace(self._initial, base_url=self._base_url)

    @property
    def url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("FakeKratos has no base_url yet: serve it or pass base_url")
        return self._base_url

    @property
    def csrf_cookie_name(self) -> str:
        return self.csrf_cookie_name_for(self.url)

    @staticmethod
    def csrf_cookie_name_for(base: str) -> str:
        return "csrf_token_" + hashlib.sha256(base.encode()).hexdigest()

    # ----- identities and sessions -----

    def add_identity(
        self,
        email: str,
        password: str,
        *,
        traits: Document | None = None,
        state: str = "active",
        metadata_public: Any = None,
        verified: bool = False,
    ) -> Document:
        """Create an identity that can log in with `email` and `password`; returns its JSON."""
        if state not in ("active", "inactive"):
            raise ValueError(f"state must be 'active' or 'inactive', not {state!r}")
        all_traits = {"email": email, **(traits or {})}
        moment = now()
        record = IdentityRecord(
            id=str(uuid.uuid4()),
            email=str(all_traits["email"]),
            password=password,
            traits=all_traits,
            state=state,
            created_at=moment,
            updated_at=moment,
            metadata_public=metadata_public,
            verified=verified,
            address_id=str(uuid.uuid4()),
            recovery_address_id=str(uuid.uuid4()),
        )
        key = record.email.lower()
        with self._lock:
            if key in self._identity_by_email:
                raise ValueError(f"an identity with the email {email!r} exists already")
            self._identities[record.id] = record
            self._identity_by_email[key] = record.id
            return identity_document(record, self._emit_base())

    def identity(self, identity_id: str) -> Document:
        with self._lock:
            return identity_document(self._identity(identity_id), self._emit_base())

    def deactivate_identity(self, identity_id: str) -> None:
        """Mark the identity inactive: its sessions answer 401 and it cannot log in."""
        self._set_state(identity_id, "inactive")

    def activate_identity(self, identity_id: str) -> None:
        self._set_state(identity_id, "active")

    def require_aal2(self, identity_id: str, totp_code: str = "123456") -> None:
        """Give the identity a second factor: its aal1 sessions get 403 session_aal2_required.

        The aal2 login form accepts `totp_code` as the authenticator code.
        """
        with self._lock:
            self._identity(identity_id).totp_code = totp_code

    def create_session(
        self,
        identity_id: str,
        *,
        aal: str = "aal1",
        expires_in: float | timedelta | None = None,
    ) -> IssuedSession:
        """Log the identity in without a form: `(session JSON, ory_st_ token)`; `.cookie` too."""
        if aal not in ("aal1", "aal2"):
            raise ValueError(f"aal must be 'aal1' or 'aal2', not {aal!r}")
        with self._lock:
            self._identity(identity_id)
            session = self._new_session(identity_id, aal, None, expires_in)
            return IssuedSession(self._session_json(session, self._emit_base()), session.token)

    def session(self, session_id_or_token: str) -> Document:
        with self._lock:
            return self._session_json(self._find_session(session_id_or_token), self._emit_base())

    def expire_session(self, session_id_or_token: str) -> None:
        """Move the session's expiry into the past: whoami answers 401 for it."""
        with self._lock:
            self._find_session(session_id_or_token).expires_at = now() - timedelta(seconds=1)

    def revoke_session(self, session_id_or_token: str) -> None:
        with self._lock:
            self._find_session(session_id_or_token).revoked = True

    def session_cookie(self, token: str) -> str:
        """The `Cookie` header value that carries the session of `token`."""
        return f"{self.cookie_name}={session_cookie_value(token)}"

    def cookies(self, token: str) -> dict[str, str]:
        """The session cookie of `token` as a mapping, e.g. for requests' `cookies=`."""
        return {self.cookie_name: session_cookie_value(token)}

    # ----- counters, request log and faults -----

    @property
    def whoami_calls(self) -> int:
        with self._lock:
            return self._whoami_total

    @property
    def whoami_calls_by_kind(self) -> dict[str, int]:
        """Whoami calls by the credential that won: token, cookie, bearer or none."""
        with self._lock:
            return dict(self._whoami_by_kind)

    def whoami_calls_for(self, credential: str) -> int:
        """Whoami calls that presented this session token (or this session cookie value)."""
        token = _token_from_cookie(credential) if not credential.startswith("ory_st_") else None
        with self._lock:
            return self._whoami_by_token[token or credential]

    @property
    def request_log(self) -> list[LoggedRequest]:
        """The last 1000 requests, oldest first."""
        with self._lock:
            return list(self._request_log)

    def reset_counters(self) -> None:
        """Zero the whoami counters and empty the request log."""
        with self._lock:
            self._whoami_total = 0
            self._whoami_by_kind.clear()
            self._whoami_by_token.clear()
            self._request_log.clear()

    def fail_whoami(
        self, status: int = 500, *, times: int | None = None, retry_after: str = ""
    ) -> None:
        """Whoami answers `status` in the error envelope (`times` calls, or until heal)."""
        self._set_fault(_Fault("status", status, times, retry_after))

    def fail_next(self, status: int = 500) -> None:
        """The next whoami call only answers `status`."""
        self.fail_whoami(status, times=1)

    def garble_whoami(self, *, times: int | None = None) -> None:
        """Whoami answers 200 with a body that is not JSON."""
        self._set_fault(_Fault("garbage", 200, times))

    def drop_whoami(self, *, times: int | None = None) -> None:
        """Whoami closes the connection without answering."""
        self._set_fault(_Fault("close", 0, times))

    def heal(self) -> None:
        """Remove any whoami fault and delay."""
        with self._lock:
            self._fault = None
            self.whoami_delay = 0.0

    # ----- WSGI -----

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        call = _Call(request, self._base_for(request))
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

    # ----- whoami -----

    def _whoami(self, call: _Call) -> Response:
        kind, token = self._credential(call.request)
        with self._lock:
            self._whoami_total += 1
            self._whoami_by_kind[kind] += 1
            if token is not None:
                self._whoami_by_token[token] += 1
            fault = self._take_fault()
            delay = self.whoami_delay
        if delay > 0:
            time.sleep(delay)
        if fault is not None:
            return self._faulty_whoami(call, fault)
        with self._lock:
            found = self._active_session(token)
            if found is None:
                raise _whoami_unauthorized()
            session, identity = found
            if identity.totp_code is not None and session.aal == "aal1":
                raise self._aal2_required(call)
            document = session_document(session, identity, call.base, now())
        if "tokenize_as" in call.request.args:
            raise KratosError(
                400,
                reason="Unable to tokenize the session: the template does not exist.",
            )
        response = _json_response(document)
        response.headers["X-Kratos-Authenticated-Identity-Id"] = identity.id
        response.headers["Cache-Control"] = SESSION_CACHE_CONTROL
        return response

    def _aal2_required(self, call: _Call) -> KratosError:
        target = f"{call.base}/self-service/login/browser?aal=aal2"
        return_to = call.request.args.get("return_to", "")
        if return_to:
            target += "&" + urlencode({"return_to": return_to})
        return KratosError(
            403,
            error_id="session_aal2_required",
            reason=(
                "An active session was found but it does not fulfill the requested Authenticator"
                " Assurance Level. Please verify yourself with a second factor to resolve this"
                " issue."
            ),
            details={"redirect_browser_to": target},
            message="Session does not fulfill the requested Authenticator Assurance Level",
            redirect_browser_to=target,
        )

    def _faulty_whoami(self, call: _Call, fault: _Fault) -> Response:
        if fault.kind == "close":
            connection = call.request.environ.get("werkzeug.socket") or call.request.environ.get(
                "gunicorn.socket"
            )
            if connection is not None:
                connection.shutdown(socket.SHUT_RDWR)
            raise ConnectionResetError("whoami dropped the connection on purpose")
        if fault.kind == "garbage":
            return Response(b"<html>this is not JSON", status=200, content_type=JSON_TYPE)
        response = self._error_response(call, KratosError(fault.status), False)
        if fault.retry_after:
            response.headers["Retry-After"] = fault.retry_after
        return response

    # ----- flows -----

    def _start_flow(self, call: _Call, kind: str, flow_type: str) -> Response:
        args = call.request.args
        requested_aal = args.get("aal", "aal1") if kind == "login" else "aal1"
        if requested_aal not in ("aal1", "aal2"):
            raise KratosError(
                400,
                reason=f"Unable to parse Authenticator Assurance Level (AAL): {requested_aal}",
            )
        refresh = kind == "login" and args.get("refresh") == "true"
        return_to = self._checked_return_to(call, args.get("return_to", ""))
        _, token = self._credential(call.request)
        with self._lock:
            found = self._active_session(token)
        if found is not None:
            session, identity = found
            upgrading = (
                requested_aal == "aal2" and session.aal == "aal1" and identity.totp_code is not None
            )
            if not (kind == "login" and (refresh or upgrading)):
                return self._already_logged_in(call, kind, flow_type, return_to)
        elif requested_aal == "aal2":
            raise KratosError(
                401,
                error_id="session_aal1_required",
                reason="You can not requested a higher AAL (AAL2/AAL3) without an active session.",
                message="aal2 and aal3 can only be requested if a session exists already",
            )
        csrf_token = ""
        if flow_type == "browser":
            existing = call.request.cookies.get(self.csrf_cookie_name_for(call.base), "")
            csrf_token = existing if len(existing) >= 32 else secrets.token_urlsafe(32)
        moment = now()
        query = call.request.query_string.decode("latin-1")
        flow = FlowRecord(
            id=str(uuid.uuid4()),
            kind=kind,
            type=flow_type,
            request_url=f"{call.base}{call.request.path}" + (f"?{query}" if query else ""),
            return_to=return_to,
            requested_aal=requested_aal,
            refresh=refresh,
            csrf_token=csrf_token,
            issued_at=moment,
            expires_at=moment + _FLOW_LIFESPAN,
        )
        with self._lock:
            if len(self._flows) >= _FLOWS_BEFORE_PRUNING:
                self._flows = {k: f for k, f in self._flows.items() if f.expires_at > moment}
            self._flows[flow.id] = flow
        if flow_type == "browser" and not call.wants_json:
            response = _redirect(f"{call.base}/ui/{kind}?flow={flow.id}")
        else:
            response = _json_response(flow_document(flow, call.base))
        if csrf_token:
            response.headers.add("Set-Cookie", self._csrf_cookie(call.base, csrf_token))
        return response

    def _already_logged_in(
        self, call: _Call, kind: str, flow_type: str, return_to: str
    ) -> Response:
        if flow_type == "browser" and not call.wants_json:
            return _redirect(return_to or self._default_return_url(call.base))
        action = "login" if kind == "login" else "registration"
        raise KratosError(
            400,
            error_id="session_already_available",
            reason=(
                f"A valid session was detected and thus {action} is not possible."
                + (" Did you forget to set `?refresh=true`?" if kind == "login" else "")
            ),
            message="you are already logged in",
        )

    def _get_flow(self, call: _Call, kind: str) -> Response:
        flow = self._flow(call.request.args.get("id", ""), kind)
        return _json_response(flow_document(flow, call.base))

    def _submit_flow(self, call: _Call, kind: str) -> Response:
        flow = self._flow(call.request.args.get("flow", ""), kind)
        form = self._submitted_fields(call.request)
        if flow.type == "browser":
            sent = form.get("csrf_token", "")
            cookie = call.request.cookies.get(self.csrf_cookie_name_for(call.base), "")
            if not (
                hmac.compare_digest(sent.encode(), flow.csrf_token.encode())
                and hmac.compare_digest(cookie.encode(), flow.csrf_token.encode())
            ):
                raise _csrf_violation()
        try:
            if kind == "login":
                session, identity = self._complete_login(call, flow, form)
            else:
                session, identity = self._complete_registration(call, flow, form)
        except _FlowRejected as rejected:
            with self._lock:
                flow.messages = [rejected.message]
                flow.values = {k: v for k, v in form.items() if k in ("identifier", "traits.email")}
            if flow.type == "browser" and not call.wants_json:
                return _redirect(f"{call.base}/ui/{kind}?flow={flow.id}", "POST")
            return _json_response(flow_document(flow, call.base), 400)
        with self._lock:
            self._flows.pop(flow.id, None)
            session_json = self._session_json(session, call.base)
            identity_json = identity_document(identity, call.base)
        target = flow.return_to or self._default_return_url(call.base)
        if identity.totp_code is not None and session.aal == "aal1":
            target = f"{call.base}/self-service/login/browser?aal=aal2"
            if flow.return_to:
                target += "&" + urlencode({"return_to": flow.return_to})
        if flow.type == "api":
            document: Document = {"session_token": session.token, "session": session_json}
            if kind == "registration":
                document = {"identity": identity_json, **document}
            return _json_response(document)
        if call.wants_json:
            document = {"session": session_json}
            if kind == "registration":
                document = {"identity": identity_json, **document}
            document["continue_with"] = [
                {"action": "redirect_browser_to", "redirect_browser_to": target}
            ]
            response = _json_response(document)
        else:
            response = _redirect(target, "POST")
        response.headers.add("Set-Cookie", self._session_cookie_header(session))
        return response

    def _complete_login(
        self, call: _Call, flow: FlowRecord, form: dict[str, str]
    ) -> tuple[SessionRecord, IdentityRecord]:
        _, token = self._credential(call.request)
        with self._lock:
            current = self._active_session(token)
            if flow.requested_aal == "aal2":
                if current is None:
                    raise _session_inactive()
                session, identity = current
                code = form.get("totp_code", "")
                if not code:
                    raise _FlowRejected(4000002, "Property totp_code is missing.")
                if identity.totp_code is None or not hmac.compare_digest(
                    code.encode(), identity.totp_code.encode()
                ):
                    raise _FlowRejected(
                        4000008, "The provided authentication code is invalid, please try again."
                    )
                moment = now()
                session.aal = "aal2"
                session.methods.append(AuthenticationMethod("totp", "aal2", moment))
                return session, identity
            identifier = form.get("identifier", "") or form.get("password_identifier", "")
            password = form.get("password", "")
            for name, value in (("identifier", identifier), ("password", password)):
                if not value:
                    raise _FlowRejected(4000002, f"Property {name} is missing.")
            identity_id = self._identity_by_email.get(identifier.strip().lower(), "")
            identity_record = self._identities.get(identity_id)
            if identity_record is None or not hmac.compare_digest(
                password.encode(), identity_record.password.encode()
            ):
                raise _FlowRejected(
                    4000006,
                    "The provided credentials are invalid, check for spelling mistakes in your"
                    " password or username, email address, or phone number.",
                )
            if identity_record.state != "active":
                raise _FlowRejected(
                    4010011,
                    "This account has been disabled. Please contact support for assistance.",
                )
            if flow.refresh and current is not None and current[1].id == identity_record.id:
                session = current[0]
                moment = now()
                session.authenticated_at = moment
                session.methods.append(AuthenticationMethod("password", "aal1", moment))
                return session, identity_record
            return self._new_session(
                identity_record.id, "aal1", call.request, None
            ), identity_record

    def _complete_registration(
        self, call: _Call, flow: FlowRecord, form: dict[str, str]
    ) -> tuple[SessionRecord, IdentityRecord]:
        email = form.get("traits.email", "").strip()
        password = form.get("password", "")
        for name, value in (("email", email), ("password", password)):
            if not value:
                raise _FlowRejected(4000002, f"Property {name} is missing.")
        if "@" not in email:
            raise _FlowRejected(4000001, f'"{email}" is not valid "email"')
        if len(password) < _MIN_PASSWORD_LENGTH:
            raise _FlowRejected(
                4000032,
                f"The password must be at least {_MIN_PASSWORD_LENGTH} characters long,"
                f" but got {len(password)}.",
            )
        traits = {
            key.removeprefix("traits."): value
            for key, value in form.items()
            if key.startswith("traits.")
        }
        try:
            created = self.add_identity(email, password, traits=traits)
        except ValueError:
            raise _FlowRejected(
                4000007,
                "An account with the same identifier (email, phone, username, ...) exists already.",
            ) from None
        with self._lock:
            session = self._new_session(created["id"], "aal1", call.request, None)
            return session, self._identities[created["id"]]

    @staticmethod
    def _submitted_fields(request: Request) -> dict[str, str]:
        """The submitted fields, flattened to form names (`traits.email`) whether form or JSON."""
        if request.mimetype != "application/json":
            return {key: value for key, value in request.form.items()}
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise KratosError(400, reason="Unable to decode JSON payload.")
        fields: dict[str, str] = {}
        for key, value in body.items():
            if isinstance(value, dict):
                fields.update({f"{key}.{k}": str(v) for k, v in value.items()})
            elif value is not None:
                fields[str(key)] = str(value)
        return fields

    # ----- logout -----

    def _logout_browser(self, call: _Call) -> Response:
        return_to = self._checked_return_to(call, call.request.args.get("return_to", ""))
        _, token = self._credential(call.request)
        logout_token = _random_token("ory_lo_")
        with self._lock:
            found = self._active_session(token)
            if found is None:
                raise _session_inactive()
            self._logout_tokens[logout_token] = found[0].id
        query = {"token": logout_token}
        if return_to:
            query["return_to"] = return_to
        return _json_response(
            {
                "logout_url": f"{call.base}/self-service/logout?{urlencode(query)}",
                "logout_token": logout_token,
            }
        )

    def _logout(self, call: _Call) -> Response:
        logout_token = call.request.args.get("token", "")
        return_to = self._checked_return_to(call, call.request.args.get("return_to", ""))
        with self._lock:
            session_id = self._logout_tokens.pop(logout_token, None)
            if session_id is None:
                raise _session_inactive()
            session = self._sessions.get(session_id)
            if session is not None:
                session.revoked = True
        if call.wants_json:
            response = Response(status=204)
            del response.headers["Content-Type"]
        else:
            response = _redirect(return_to or self._default_return_url(call.base))
        response.headers.add(
            "Set-Cookie",
            go_cookie(
                self.cookie_name,
                "",
                expires=_EPOCH_PLUS_ONE,
                max_age=0,
                secure=self.secure_cookies,
            ),
        )
        return response

    # ----- errors, schemas and the UI -----

    def _get_error(self, call: _Call) -> Response:
        with self._lock:
            stored = self._errors.get(call.request.args.get("id", ""))
        if stored is None:
            raise KratosError(404, reason="The requested error could not be found.")
        created = rfc3339(stored.created_at)
        return _json_response(
            {"id": stored.id, "error": stored.error, "created_at": created, "updated_at": created}
        )

    def _schema(self, call: _Call) -> Response:
        schema_id = str(call.route_args.get("schema_id", ""))
        if schema_id in (
            DEFAULT_SCHEMA_ID,
            schema_url(call.base, DEFAULT_SCHEMA_ID).rsplit("/")[-1],
        ):
            return _json_response(schema_document(call.base))
        raise KratosError(404, reason="The identity schema could not be found.")

    def _ui_flow(self, call: _Call, kind: str) -> Response:
        flow_id = call.request.args.get("flow", "")
        with self._lock:
            flow = self._flows.get(flow_id)
            document = flow_document(flow, call.base) if flow and flow.kind == kind else None
        if document is None:
            # Ory's hosted UI answers a relative Location here; proxies must cope with it.
            query = "" if flow_id else call.request.query_string.decode("latin-1")
            return _redirect(f"../self-service/{kind}/browser" + (f"?{query}" if query else ""))
        return_to = document.get("return_to", "")
        suffix = f"?{urlencode({'return_to': return_to})}" if return_to else ""
        if kind == "login":
            title = "Sign in" if document.get("requested_aal") != "aal2" else "Second factor"
            links = [
                ("Create an account", f"{call.base}/self-service/registration/browser{suffix}")
            ]
        else:
            title = "Create an account"
            links = [("Sign in instead", f"{call.base}/self-service/login/browser{suffix}")]
        return _html_response(pages.flow_page(title, document, links))

    def _ui_welcome(self, call: _Call) -> Response:
        _, token = self._credential(call.request)
        with self._lock:
            found = self._active_session(token)
            session_json = None
            if found is not None:
                session_json = self._session_json(found[0], call.base)
                logout_token = _random_token("ory_lo_")
                self._logout_tokens[logout_token] = found[0].id
        if session_json is None:
            links = [
                ("Sign in", f"{call.base}/self-service/login/browser"),
                ("Create an account", f"{call.base}/self-service/registration/browser"),
            ]
        else:
            links = [("Log out", f"{call.base}/self-service/logout?token={quote(logout_token)}")]
        return _html_response(pages.welcome_page(session_json, links))

    def _ui_error(self, call: _Call) -> Response:
        with self._lock:
            stored = self._errors.get(call.request.args.get("id", ""))
        error = stored.error if stored else None
        return _html_response(pages.error_page(error, f"{call.base}/ui/welcome"))

    def _ui_notice(self, call: _Call) -> Response:
        title = call.request.path.rsplit("/", 1)[-1].capitalize()
        text = f"{title} is not available in the local Ory stand-in."
        return _html_response(pages.notice_page(title, text, f"{call.base}/ui/welcome"))

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

    def _emit_base(self) -> str:
        return self._base_url or "http://127.0.0.1"

    def _default_return_url(self, base: str) -> str:
        return self.default_return_url or f"{base}/ui/welcome"

    def _checked_return_to(self, call: _Call, raw: str) -> str:
        """The return_to to honour: allowed → kept, no allow-list → dropped, refused → 400."""
        if not raw:
            return ""
        target = urljoin(call.base + "/", raw)
        parsed = urlsplit(target)
        host = parsed.netloc.rpartition("@")[2].lower()
        path = parsed.path or "/"
        for allowed in [*self.allowed_return_urls, call.base]:
            allowed_url = urlsplit(allowed)
            allowed_host = allowed_url.netloc.rpartition("@")[2].lower()
            host_matches = (
                host.endswith(allowed_host[1:])
                if allowed_host.startswith("*")
                else host == allowed_host
            )
            if (
                parsed.scheme.lower() == allowed_url.scheme.lower()
                and host_matches
                and path.startswith(allowed_url.path or "/")
            ):
                return target
        if not self.allowed_return_urls:
            return ""
        raise KratosError(
            400,
            error_id="self_service_flow_return_to_forbidden",
            reason=f"Requested return_to URL {json.dumps(raw)} is not allowed.",
        )

    def _credential(self, request: Request) -> tuple[str, str | None]:
        """The session credential Kratos would use: the first of token header, cookie, bearer."""
        header_token = request.headers.get("X-Session-Token", "")
        if header_token:
            return "token", header_token
        cookie = request.cookies.get(self.cookie_name)
        if cookie:
            token = _token_from_cookie(cookie)
            if token is not None:
                return "cookie", token
        scheme, _, value = request.headers.get("Authorization", "").strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return "bearer", value.strip()
        return "none", None

    def _active_session(self, token: str | None) -> tuple[SessionRecord, IdentityRecord] | None:
        if token is None:
            return None
        session = self._sessions.get(self._session_by_token.get(token, ""))
        if session is None:
            return None
        identity = self._identities[session.identity_id]
        if not session_is_active(session, identity, now()):
            return None
        return session, identity

    def _new_session(
        self,
        identity_id: str,
        aal: str,
        request: Request | None,
        expires_in: float | timedelta | None,
    ) -> SessionRecord:
        moment = now()
        lifespan = (
            expires_in
            if isinstance(expires_in, timedelta)
            else timedelta(seconds=self.session_lifespan if expires_in is None else expires_in)
        )
        methods = [AuthenticationMethod("password", "aal1", moment)]
        if aal == "aal2":
            methods.append(AuthenticationMethod("totp", "aal2", moment))
        device = {
            "id": str(uuid.uuid4()),
            "ip_address": request.remote_addr if request is not None else "127.0.0.1",
            "user_agent": request.user_agent.string if request is not None else "ory_wsgi.testing",
            "location": "",
        }
        session = SessionRecord(
            id=str(uuid.uuid4()),
            token=_random_token("ory_st_"),
            identity_id=identity_id,
            aal=aal,
            methods=methods,
            issued_at=moment,
            authenticated_at=moment,
            expires_at=moment + lifespan,
            devices=[device],
        )
        self._sessions[session.id] = session
        self._session_by_token[session.token] = session.id
        return session

    def _session_json(self, session: SessionRecord, base: str) -> Document:
        return session_document(session, self._identities[session.identity_id], base, now())

    def _identity(self, identity_id: str) -> IdentityRecord:
        try:
            return self._identities[identity_id]
        except KeyError:
            raise KeyError(f"no identity {identity_id!r}") from None

    def _set_state(self, identity_id: str, state: str) -> None:
        with self._lock:
            identity = self._identity(identity_id)
            identity.state = state
            identity.updated_at = now()

    def _find_session(self, session_id_or_token: str) -> SessionRecord:
        session_id = self._session_by_token.get(session_id_or_token, session_id_or_token)
        try:
            return self._sessions[session_id]
        except KeyError:
            raise KeyError(f"no session {session_id_or_token!r}") from None

    def _flow(self, flow_id: str, kind: str) -> FlowRecord:
        with self._lock:
            flow = self._flows.get(flow_id)
        if flow is None or flow.kind != kind:
            raise KratosError(404, reason=f"The {kind} flow could not be found.")
        if flow.expires_at <= now():
            raise KratosError(
                410,
                error_id="self_service_flow_expired",
                reason=f"The {kind} flow has expired. Please start a new one.",
            )
        return flow

    def _set_fault(self, fault: _Fault) -> None:
        with self._lock:
            self._fault = fault

    def _take_fault(self) -> _Fault | None:
        fault = self._fault
        if fault is None:
            return None
        if fault.remaining is not None:
            fault.remaining -= 1
            if fault.remaining <= 0:
                self._fault = None
        return fault

    def _session_cookie_header(self, session: SessionRecord) -> str:
        max_age = int((session.expires_at - now()).total_seconds())
        return go_cookie(
            self.cookie_name,
            session_cookie_value(session.token),
            expires=session.expires_at,
            max_age=max_age,
            secure=self.secure_cookies,
        )

    def _csrf_cookie(self, base: str, value: str) -> str:
        return go_cookie(
            self.csrf_cookie_name_for(base),
            value,
            expires=now() + timedelta(seconds=_CSRF_MAX_AGE),
            max_age=_CSRF_MAX_AGE,
            secure=self.secure_cookies,
        )

    def _error_response(self, call: _Call, error: KratosError, browser: bool) -> Response:
        if browser and not call.wants_json:
            stored = StoredError(str(uuid.uuid4()), error.error_document(call.request_id), now())
            with self._lock:
                self._errors[stored.id] = stored
            return _redirect(f"{call.base}/ui/error?id={stored.id}", call.request.method)
        response = Response(
            go_json(error.envelope(call.request_id)),
            status=error.status,
            content_type=ERROR_JSON_TYPE,
        )
        if error.error_id:
            response.headers["Ory-Error-Id"] = error.error_id
        return response
