"""Ask Ory (Kratos) who a request belongs to: credentials, the whoami and logout calls.

    client = OryClient("https://acme.projects.oryapis.com")
    credentials = extract_credentials(environ, session_cookie_names(...))
    lookup = client.whoami(credentials, request_id) if credentials else ANONYMOUS

The client holds one urllib3 pool for the life of the worker. It sends Ory
nothing but the credentials (the session cookies and tokens, each bounded in
size: `ory.cookies`), never follows redirects, keeps no cookies, reads no
proxy variables, and turns every failure into a `Lookup` with an error code
instead of an exception. After a few failures in a row it stops asking Ory for
a short back-off, so requests fail fast instead of piling up on a dead Ory.
Only failures of Ory count towards that back-off (no answer, 5xx, an
unusable 200): a 4xx is Ory refusing what this one client sent, and a client
must not be able to make Ory "unavailable" for every other user.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote, urlsplit

from urllib3 import BaseHTTPResponse, HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    ProtocolError,
    ReadTimeoutError,
)
from urllib3.util import Timeout
from urllib3.util.request import SKIP_HEADER

from ory_wsgi.ory.cookies import credential_fits, session_cookies
from ory_wsgi.ory.cookies import session_cookie_names as session_cookie_names

log = logging.getLogger("ory_wsgi.ory")

AAL2_REQUIRED = "session_aal2_required"
UNAVAILABLE = "ory_unavailable"
REFUSED = "credentials_refused"

Outcome = Literal["authenticated", "anonymous", "aal2_required", "rate_limited", "error"]


class OryUnavailable(Exception):
    """Ory did not give a usable answer (down, slow, garbage, or backing off)."""

    code = UNAVAILABLE


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a request proves about its session, ready to be sent to Ory.

    The secrets are left out of `repr` so a stray log line cannot leak them.
    """

    cookie: str = field(repr=False)
    """The Cookie header for Ory: only the session cookies, each once."""
    session_token: str = field(repr=False)
    bearer: str = field(repr=False)
    cache_key: bytes
    """A digest of everything sent to Ory: same key, same answer."""


@dataclass(frozen=True, slots=True)
class Lookup:
    """The answer to "whose request is this?"."""

    outcome: Outcome
    session: dict[str, Any] | None = field(default=None, repr=False)
    subject: str | None = None
    expires_at: float | None = None
    """The session's `expires_at` as epoch seconds."""
    retry_after: str | None = None
    redirect_browser_to: str | None = None
    error: str | None = None

    @property
    def authenticated(self) -> bool:
        return self.outcome == "authenticated"

    @property
    def aal_required(self) -> bool:
        return self.outcome == "aal2_required"


ANONYMOUS = Lookup("anonymous")
FAILED = Lookup("error", error=UNAVAILABLE)


def extract_credentials(
    environ: Mapping[str, Any], cookie_names: frozenset[str]
) -> Credentials | None:
    """The request's session credentials, or None when it has none (anonymous, no call).

    A request counts as carrying a session when it has an `X-Session-Token`,
    a non-empty cookie named in `cookie_names`, or `Authorization: Bearer`.
    Only those cookies are kept: no other cookie travels to Ory. A token or
    cookie too large to be real is left out (and logged), as if not sent.
    """
    request_id: str = environ.get("ory.request_id", "")
    token: str = environ.get("HTTP_X_SESSION_TOKEN", "")
    if token and not credential_fits("X-Session-Token", token, request_id):
        token = ""
    header: str = environ.get("HTTP_COOKIE", "")
    cookie = session_cookies(header, cookie_names, request_id) if header else ""
    bearer = ""
    authorization: str = environ.get("HTTP_AUTHORIZATION", "")
    if authorization:
        scheme, _, rest = authorization.partition(" ")
        if scheme.lower() == "bearer" and rest.strip():
            bearer = rest.strip()
            if not credential_fits("the Authorization bearer token", bearer, request_id):
                bearer = ""
    if not (token or cookie or bearer):
        return None
    material = f"{token}\n{cookie}\n{bearer}".encode("utf-8", "surrogatepass")
    key = hashlib.blake2b(material, digest_size=16).digest()
    return Credentials(cookie, token, bearer, key)


class OryClient:
    """Pooled, bounded calls to Ory's public API; one per worker, safe across threads.

    `timeout` bounds the whole lookup, the one retry included; the connect
    phase gets at most `min(1 s, timeout / 2)` per attempt. Only a failure to
    connect (refused, connect timeout, or a pooled connection Ory had closed
    before answering) is retried. After `failure_threshold` failed calls in a
    row, Ory is left alone for `backoff` seconds: calls answer the error at
    once, then one call at a time probes Ory until it answers.

    `base_url_rewrite` (`<public URL>/.ory`) is sent on the logout call with
    the API key as its token, so the logout URL Ory returns points through
    the proxy; a self-hosted Kratos ignores the header, so its own origin is
    replaced in the returned URL too.
    """

    def __init__(
        self,
        ory_url: str,
        *,
        timeout: float = 3.0,
        api_key: str = "",
        pool_size: int = 32,
        base_url_rewrite: str = "",
        failure_threshold: int = 3,
        backoff: float = 1.0,
    ) -> None:
        parts = urlsplit(ory_url)
        secure = parts.scheme == "https"
        pool_cls = HTTPSConnectionPool if secure else HTTPConnectionPool
        if not parts.hostname:
            raise ValueError(f"not an Ory URL: {ory_url!r}")
        self.timeout = timeout
        self.connect_timeout = min(1.0, timeout / 2)
        self.pool = pool_cls(
            parts.hostname,
            parts.port or (443 if secure else 80),
            maxsize=pool_size,
            block=False,
            retries=False,
            timeout=Timeout(connect=self.connect_timeout, read=timeout),
        )
        self.ory_url = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        base_path = parts.path.rstrip("/")
        self.whoami_path = base_path + "/sessions/whoami"
        self.logout_path = base_path + "/self-service/logout/browser"
        self.base_url_rewrite = base_url_rewrite.rstrip("/")
        self.logout_headers: dict[str, str] = {}
        if self.base_url_rewrite:
            self.logout_headers["Ory-Base-URL-Rewrite"] = self.base_url_rewrite
            self.logout_headers["Ory-No-Custom-Domain-Redirect"] = "true"
            if api_key:
                self.logout_headers["Ory-Base-URL-Rewrite-Token"] = api_key
        self.failure_threshold = failure_threshold
        self.backoff = backoff
        self.last_answer = 0.0
        """`time.monotonic()` of Ory's last HTTP answer of any status (0: never)."""
        self._failures = 0
        self._open_until = 0.0
        self._breaker_lock = threading.Lock()

    def whoami(self, credentials: Credentials, request_id: str) -> Lookup:
        """GET /sessions/whoami with only these credentials; never raises."""
        headers = _base_headers(request_id)
        if credentials.session_token:
            headers["X-Session-Token"] = credentials.session_token
        if credentials.cookie:
            headers["Cookie"] = credentials.cookie
        if credentials.bearer:
            headers["Authorization"] = "Bearer " + credentials.bearer
        try:
            response = self._get(self.whoami_path, headers, request_id)
        except OryUnavailable:
            return FAILED
        status = response.status
        if status == 200:
            lookup = _session_lookup(response.data)
        elif status == 401:
            lookup = ANONYMOUS
        elif status == 429:
            lookup = Lookup("rate_limited", retry_after=response.headers.get("Retry-After"))
        elif status == 403 and (aal2 := _aal2_lookup(response.data)) is not None:
            lookup = aal2
        elif 400 <= status < 500:
            # Ory refused what this client sent (a malformed token, a header too
            # large): no session for this request, and no failure of Ory.
            self._refused(request_id, f"GET {self.whoami_path} answered {status}")
            return ANONYMOUS
        else:
            lookup = FAILED
        if lookup.outcome == "error":
            unusable = " with an unusable body" if status == 200 else ""
            self._failed(request_id, f"GET {self.whoami_path} answered {status}{unusable}")
            return FAILED
        self._succeeded()
        return lookup

    def logout_url(
        self, credentials: Credentials, request_id: str, return_to: str = ""
    ) -> str | None:
        """The URL that ends this browser session, or None when there is no session.

        `return_to` is where Ory sends the browser once the session is ended.
        A Kratos that refuses it (400: not in its `allowed_return_urls`) is
        asked again without it, and the operator is told in the log. Raises
        `OryUnavailable` when Ory gives no usable answer.
        """
        if not credentials.cookie:
            return None
        headers = _base_headers(request_id)
        headers["Cookie"] = credentials.cookie
        headers.update(self.logout_headers)
        path = self.logout_path
        if return_to:
            path += "?return_to=" + quote(return_to, safe="")
        response = self._get(path, headers, request_id)
        if return_to and response.status == 400:
            log.warning(
                "Ory refused return_to=%s for the logout; add it to Kratos' "
                "selfservice.allowed_return_urls. Logging out without it.",
                return_to,
                extra={"fields": {"request_id": request_id}},
            )
            response = self._get(self.logout_path, headers, request_id)
        if response.status == 401:
            self._succeeded()
            return None
        if 400 <= response.status < 500:
            # Ory refused this client's request: the session is not ended, so no
            # "logged out" redirect, and no failure of Ory counted either.
            self._refused(request_id, f"GET {self.logout_path} answered {response.status}")
            raise OryUnavailable(f"logout answered {response.status}")
        url: object = None
        if response.status == 200:
            try:
                url = json.loads(response.data).get("logout_url")
            except (ValueError, AttributeError):
                url = None
        if not isinstance(url, str) or not url:
            self._failed(request_id, f"GET {self.logout_path} answered {response.status}")
            raise OryUnavailable(f"logout answered {response.status}")
        self._succeeded()
        if self.base_url_rewrite and url.startswith(self.ory_url + "/"):
            url = self.base_url_rewrite + url[len(self.ory_url) :]
        return url

    def close(self) -> None:
        self.pool.close()

    def _get(self, path: str, headers: dict[str, str], request_id: str) -> BaseHTTPResponse:
        if not self._allow():
            raise OryUnavailable("backing off")
        deadline = time.monotonic() + self.timeout
        for attempt in range(2):
            remaining = max(deadline - time.monotonic(), 0.001)
            try:
                response = self.pool.urlopen(
                    "GET",
                    path,
                    headers=headers,
                    retries=False,
                    redirect=False,
                    assert_same_host=False,
                    timeout=Timeout(total=remaining, connect=min(self.connect_timeout, remaining)),
                )
            # NewConnectionError subclasses ConnectTimeoutError; both are retried.
            except (ConnectTimeoutError, ProtocolError) as exc:
                if attempt == 0 and deadline - time.monotonic() > 0:
                    continue
                reason = _reason(exc)
            except ReadTimeoutError:
                reason = f"no answer within {self.timeout:g}s"
            except (HTTPError, OSError, ValueError) as exc:
                reason = _reason(exc)
            else:
                self.last_answer = time.monotonic()
                return response
            self._failed(request_id, f"GET {path}: {reason}")
            raise OryUnavailable(reason)
        raise AssertionError("unreachable")  # pragma: no cover

    def _allow(self) -> bool:
        if self._failures < self.failure_threshold:
            return True
        with self._breaker_lock:
            now = time.monotonic()
            if now < self._open_until:
                return False
            # This caller probes Ory; the others keep failing fast meanwhile.
            self._open_until = now + self.backoff
            return True

    def _succeeded(self) -> None:
        if self._failures:
            with self._breaker_lock:
                self._failures = 0
                self._open_until = 0.0

    def _refused(self, request_id: str, reason: str) -> None:
        """Ory answered, refusing what one client sent: Ory is fine, nothing is counted."""
        self._succeeded()
        log.warning(
            "%s: %s to this request's credentials (not counted as a failure of Ory)",
            REFUSED,
            reason,
            extra={"fields": {"error": REFUSED, "request_id": request_id}},
        )

    def _failed(self, request_id: str, reason: str) -> None:
        with self._breaker_lock:
            self._failures += 1
            opened = self._failures >= self.failure_threshold
            if opened:
                self._open_until = time.monotonic() + self.backoff
        suffix = f"; not asking again for {self.backoff:g}s" if opened else ""
        log.error(
            "%s: %s%s",
            UNAVAILABLE,
            reason,
            suffix,
            extra={"fields": {"error": UNAVAILABLE, "request_id": request_id}},
        )


def _base_headers(request_id: str) -> dict[str, str]:
    # SKIP_HEADER keeps urllib3 and http.client from adding their own headers.
    return {
        "Accept": "application/json",
        "X-Request-Id": request_id,
        "User-Agent": SKIP_HEADER,
        "Accept-Encoding": SKIP_HEADER,
    }


def _session_lookup(body: bytes) -> Lookup:
    try:
        session = json.loads(body)
    except ValueError:
        return FAILED
    if not isinstance(session, dict):
        return FAILED
    if session.get("active") is not True:
        return ANONYMOUS
    identity = session.get("identity")
    subject = identity.get("id") if isinstance(identity, dict) else None
    if not isinstance(subject, str) or not subject:
        return FAILED
    return Lookup(
        "authenticated",
        session=session,
        subject=subject,
        expires_at=rfc3339_epoch(session.get("expires_at")),
    )


def _aal2_lookup(body: bytes) -> Lookup | None:
    """The lookup of a 403 `session_aal2_required`; None for any other 403."""
    try:
        envelope = json.loads(body)
        error = envelope["error"]
        error_id = error.get("id")
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    if error_id != AAL2_REQUIRED:
        return None
    redirect = envelope.get("redirect_browser_to")
    if not isinstance(redirect, str):
        details = error.get("details")
        redirect = details.get("redirect_browser_to") if isinstance(details, dict) else None
    return Lookup(
        "aal2_required", redirect_browser_to=redirect if isinstance(redirect, str) else None
    )


def rfc3339_epoch(value: object) -> float | None:
    """Seconds since the epoch of an RFC 3339 time as Kratos writes it; None if absent or bad."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or (exc.args[-1] if exc.args else exc)
    return str(reason)[:200] or type(exc).__name__
