"""The stand-in's in-memory state: identities, sessions, flows, counters, faults; thread-safe."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import string
import threading
import uuid
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, NamedTuple

from werkzeug.wrappers import Request, Response

from ory_wsgi.testing.documents import (
    AuthenticationMethod,
    Document,
    FlowRecord,
    IdentityRecord,
    KratosError,
    Mail,
    SessionRecord,
    StoredError,
    go_cookie,
    go_json,
    identity_document,
    now,
    session_document,
    session_is_active,
)
from ory_wsgi.testing.responses import ERROR_JSON_TYPE, Call, redirect

_TOKEN_ALPHABET = string.ascii_letters + string.digits
_TOKEN_SHAPE = re.compile(r"(ory_st_)?[A-Za-z0-9]{32}")
_CSRF_MAX_AGE = 31536000


def random_token(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(32))


def session_cookie_value(token: str) -> str:
    """The session cookie value that stands for `token` (Kratos' cookie carries the token)."""
    return base64.urlsafe_b64encode(token.encode()).rstrip(b"=").decode()


def token_from_cookie(value: str) -> str | None:
    try:
        decoded = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode("ascii")
    except (ValueError, UnicodeDecodeError):
        return None
    return decoded if _TOKEN_SHAPE.fullmatch(decoded) else None


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
class Fault:
    kind: str  # "status", "garbage" or "close"
    status: int
    remaining: int | None
    retry_after: str = ""


@dataclass(frozen=True)
class Settings:
    base_url: str | None
    cookie_name: str
    secure_cookies: bool
    allowed_return_urls: tuple[str, ...]
    default_return_url: str | None
    session_lifespan: float
    rewrite_token: str | None
    login_hint: str


class KratosStore:
    """The stand-in's state: settings, identities, sessions, flows, counters and faults, locked.

    The endpoint classes build on it; FakeKratos puts them together behind one WSGI app.
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
        self._initial = Settings(
            base_url=base_url.rstrip("/") if base_url else None,
            cookie_name=cookie_name,
            secure_cookies=secure_cookies,
            allowed_return_urls=tuple(allowed_return_urls),
            default_return_url=default_return_url,
            session_lifespan=session_lifespan,
            rewrite_token=rewrite_token,
            login_hint=login_hint,
        )
        self._lock = threading.RLock()
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
            self.login_hint = settings.login_hint
            self.whoami_delay = 0.0
            self._identities: dict[str, IdentityRecord] = {}
            self._identity_by_email: dict[str, str] = {}
            self._sessions: dict[str, SessionRecord] = {}
            self._session_by_token: dict[str, str] = {}
            self._flows: dict[str, FlowRecord] = {}
            self._logout_tokens: dict[str, str] = {}
            self._errors: dict[str, StoredError] = {}
            self._outbox: list[Mail] = []
            self._fault: Fault | None = None
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

    def age_session(self, session_id_or_token: str, seconds: float) -> None:
        """Move the session's sign-in `seconds` back: too old for a password change."""
        with self._lock:
            session = self._find_session(session_id_or_token)
            session.authenticated_at -= timedelta(seconds=seconds)

    def revoke_session(self, session_id_or_token: str) -> None:
        with self._lock:
            self._find_session(session_id_or_token).revoked = True

    def session_cookie(self, token: str) -> str:
        """The `Cookie` header value that carries the session of `token`."""
        return f"{self.cookie_name}={session_cookie_value(token)}"

    def cookies(self, token: str) -> dict[str, str]:
        """The session cookie of `token` as a mapping, e.g. for requests' `cookies=`."""
        return {self.cookie_name: session_cookie_value(token)}

    # ----- the "mail" it sends (recovery and verification codes) -----

    @property
    def outbox(self) -> list[Mail]:
        """Every message sent, oldest first; also shown on the stand-in's /ui/mail page."""
        with self._lock:
            return list(self._outbox)

    def last_code(self, email: str) -> str:
        """The code in the newest message to `email` (KeyError when none was sent)."""
        with self._lock:
            for mail in reversed(self._outbox):
                if mail.to.lower() == email.strip().lower():
                    return mail.code
        raise KeyError(f"no mail sent to {email!r}")

    # ----- internals -----

    def _emit_base(self) -> str:
        return self._base_url or "http://127.0.0.1"

    def _default_return_url(self, base: str) -> str:
        return self.default_return_url or f"{base}/ui/welcome"

    def _credential(self, request: Request) -> tuple[str, str | None]:
        """The session credential Kratos would use: the first of token header, cookie, bearer."""
        header_token = request.headers.get("X-Session-Token", "")
        if header_token:
            return "token", header_token
        cookie = request.cookies.get(self.cookie_name)
        if cookie:
            token = token_from_cookie(cookie)
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
            token=random_token("ory_st_"),
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

    def _error_response(self, call: Call, error: KratosError, browser: bool) -> Response:
        if browser and not call.wants_json:
            stored = StoredError(str(uuid.uuid4()), error.error_document(call.request_id), now())
            with self._lock:
                self._errors[stored.id] = stored
            return redirect(f"{call.base}/ui/error?id={stored.id}", call.request.method)
        response = Response(
            go_json(error.envelope(call.request_id)),
            status=error.status,
            content_type=ERROR_JSON_TYPE,
        )
        if error.error_id:
            response.headers["Ory-Error-Id"] = error.error_id
        return response
