"""A Hydra (Ory OAuth2) stand-in: opaque access tokens, introspection, client credentials.

    hydra = FakeHydra()
    with serve_hydra(hydra=hydra) as server:        # server.url: Hydra's public and admin URL
        token = hydra.issue(subject="ada", scope=["photos.read"], audience=["api"], ttl=60)
        ...                                         # introspection_url = hydra.introspection_url
    assert hydra.calls(token) == 1

Served as Hydra v2 serves them (both APIs on one port):
- `POST /admin/oauth2/introspect` (form `token`, optional `scope`, space-separated):
  RFC 7662's answer for an active token: `active`, `sub`, `client_id`, `scope`,
  `exp`, `iat`, `nbf`, `aud` (a list), `iss`, `token_type` ("Bearer"),
  `token_use` ("access_token"), and `ext` when the token has extra claims.
  An unknown, revoked or expired token, or one not granted every requested
  `scope` (Hydra's default `wildcard` strategy), is `{"active": false}` with 200,
  as fosite answers. No `token` is 400 with Hydra's error envelope.
  `require_introspection_auth = True` makes the endpoint want `Authorization:
  Bearer <an active token>` (as Ory Network's admin API does); without it, 401.
- `POST /oauth2/token` with `grant_type=client_credentials` and the client's
  credentials in HTTP Basic auth (or `client_id`/`client_secret` in the form):
  `{"access_token": "ory_at_...", "token_type": "bearer", "expires_in", "scope"}`
  for a client added with `add_client(...)`; a bad client is 401 `invalid_client`.
Tokens look like Hydra's (`ory_at_<random>.<random>`). Counters:
`introspection_calls`, `calls(token)` (introspections of one token),
`token_calls`. Faults: `fail_introspection(503)` / `fail_introspection(429,
retry_after="7")` make every introspection answer that status until `reset()`,
`delay` slows every introspection (single-flight tests), and `answer_with(token,
{...})` sends a crafted answer for one token (a misbehaving server). A stopped
server refuses connections.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from werkzeug.wrappers import Request, Response

from ory_wsgi.pipeline.scope import wildcard
from ory_wsgi.testing.server import StandInServer
from ory_wsgi.wsgi import StartResponse, WSGIEnvironment

INTROSPECT_PATH = "/admin/oauth2/introspect"
TOKEN_PATH = "/oauth2/token"  # noqa: S105 (a path)
DEFAULT_CLIENT = "ory-wsgi-test"
ACCESS_TOKEN = "access_token"  # noqa: S105 (the token_use of access tokens)


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """One access token as Hydra keeps it."""

    subject: str
    client_id: str
    scope: tuple[str, ...]
    audience: tuple[str, ...]
    issued_at: int
    expires_at: int
    ext: Mapping[str, Any] = field(default_factory=dict)
    token_use: str = ACCESS_TOKEN


@dataclass(frozen=True, slots=True)
class Client:
    client_id: str
    secret: str
    scope: tuple[str, ...]
    audience: tuple[str, ...]
    ttl: float


class FakeHydra:
    """Tokens, OAuth2 clients, counters and injected faults; a WSGI app."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.url = ""  # set by the server that serves it
        self.reset()

    @property
    def issuer(self) -> str:
        """The `iss` of every token: Hydra's public URL with its trailing slash."""
        return f"{self.url}/"

    @property
    def introspection_url(self) -> str:
        return f"{self.url}{INTROSPECT_PATH}"

    @property
    def token_url(self) -> str:
        return f"{self.url}{TOKEN_PATH}"

    def reset(self) -> None:
        with self._lock:
            self.tokens: dict[str, IssuedToken] = {}
            self.clients: dict[str, Client] = {}
            self.crafted: dict[str, Any] = {}
            self.per_token: Counter[str] = Counter()
            self.introspection_calls = 0
            self.token_calls = 0
            self.fault: tuple[int, str | None] | None = None
            self.delay = 0.0
            self.require_introspection_auth = False
            self.seen_headers: list[dict[str, str]] = []

    def issue(
        self,
        subject: str = "ada",
        *,
        scope: Sequence[str] = (),
        audience: Sequence[str] = (),
        ttl: float = 3600.0,
        client_id: str = DEFAULT_CLIENT,
        ext: Mapping[str, Any] | None = None,
        token_use: str = ACCESS_TOKEN,
        prefix: str = "ory_at_",
    ) -> str:
        """A new opaque token, active for `ttl` seconds (`exp` is a whole second, as Hydra's)."""
        token = f"{prefix}{secrets.token_urlsafe(32)}.{secrets.token_urlsafe(32)}"
        now = time.time()
        issued = IssuedToken(
            subject,
            client_id,
            tuple(scope),
            tuple(audience),
            int(now),
            int(now + ttl),
            dict(ext or {}),
            token_use,
        )
        with self._lock:
            self.tokens[token] = issued
        return token

    def revoke(self, token: str) -> None:
        with self._lock:
            self.tokens.pop(token, None)

    def add_client(
        self,
        client_id: str,
        secret: str,
        *,
        scope: Sequence[str] = (),
        audience: Sequence[str] = (),
        ttl: float = 3600.0,
    ) -> None:
        """An OAuth2 client allowed the client-credentials grant for `scope` and `audience`."""
        with self._lock:
            self.clients[client_id] = Client(client_id, secret, tuple(scope), tuple(audience), ttl)

    def answer_with(self, token: str, answer: Any) -> None:
        """Introspecting `token` answers `answer` as JSON, whatever it is (attack tests)."""
        with self._lock:
            self.crafted[token] = answer

    def fail_introspection(self, status: int, retry_after: str | None = None) -> None:
        self.fault = (status, retry_after)

    def calls(self, token: str) -> int:
        """How many times `token` was introspected."""
        return self.per_token[token]

    def introspect(self, token: str, scope: Iterable[str] = ()) -> dict[str, Any]:
        """What the endpoint answers for `token` (no counting, no faults)."""
        with self._lock:
            issued = self.tokens.get(token)
        if issued is None or issued.expires_at <= time.time():
            return {"active": False}
        if not all(wildcard(issued.scope, wanted) for wanted in scope):
            return {"active": False}
        answer: dict[str, Any] = {
            "active": True,
            "sub": issued.subject,
            "client_id": issued.client_id,
            "scope": " ".join(issued.scope),
            "exp": issued.expires_at,
            "iat": issued.issued_at,
            "nbf": issued.issued_at,
            "aud": list(issued.audience),
            "iss": self.issuer,
            "token_type": "Bearer",
            "token_use": issued.token_use,
        }
        if issued.ext:
            answer["ext"] = dict(issued.ext)
        return answer

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        return self.answer(Request(environ))(environ, start_response)

    def answer(self, request: Request) -> Response:
        if request.path == INTROSPECT_PATH:
            if request.method != "POST":
                return _error(405, "method_not_allowed", "use POST")
            return self._introspection(request)
        if request.path == TOKEN_PATH:
            if request.method != "POST":
                return _error(405, "method_not_allowed", "use POST")
            return self._token(request)
        return _error(404, "not_found", "The requested resource could not be found")

    def _introspection(self, request: Request) -> Response:
        token = request.form.get("token", "")
        with self._lock:
            self.introspection_calls += 1
            self.per_token[token] += 1
            self.seen_headers.append(dict(request.headers.items()))
        if self.delay:
            time.sleep(self.delay)
        if self.fault is not None:
            status, retry_after = self.fault
            response = _error(status, "fault", "injected by the test")
            if retry_after is not None:
                response.headers["Retry-After"] = retry_after
            return response
        if self.require_introspection_auth and not self._authorized(request):
            return _error(401, "request_unauthorized", "The request could not be authorized.")
        if not token:
            return _error(400, "invalid_request", "The request is missing the token parameter.")
        if token in self.crafted:
            return Response(json.dumps(self.crafted[token]), 200, mimetype="application/json")
        scope = request.form.get("scope", "").split()
        return Response(json.dumps(self.introspect(token, scope)), 200, mimetype="application/json")

    def _authorized(self, request: Request) -> bool:
        scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and self.introspect(credential.strip())["active"]

    def _token(self, request: Request) -> Response:
        with self._lock:
            self.token_calls += 1
        if request.form.get("grant_type") != "client_credentials":
            return _error(400, "unsupported_grant_type", "Only client_credentials is served.")
        client_id, secret = _client_credentials(request)
        client = self.clients.get(client_id)
        if client is None or not secrets.compare_digest(client.secret, secret):
            return _error(401, "invalid_client", "Client authentication failed.")
        scope = request.form.get("scope", "").split()
        if not all(wildcard(client.scope, wanted) for wanted in scope):
            return _error(400, "invalid_scope", "The requested scope is not allowed.")
        audience = request.form.getlist("audience")
        audience = [a for value in audience for a in value.split()]
        if not all(a in client.audience for a in audience):
            return _error(400, "invalid_request", "The requested audience is not allowed.")
        token = self.issue(
            client_id, scope=scope, audience=audience, ttl=client.ttl, client_id=client_id
        )
        body = {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": int(client.ttl),
            "scope": " ".join(scope),
        }
        return Response(json.dumps(body), 200, mimetype="application/json")


def _client_credentials(request: Request) -> tuple[str, str]:
    """client_secret_basic (form-urlencoded id and secret, RFC 6749 §2.3.1), else the form's."""
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode()
        except ValueError:
            return "", ""
        client_id, _, secret = decoded.partition(":")
        return unquote(client_id.replace("+", " ")), unquote(secret.replace("+", " "))
    return request.form.get("client_id", ""), request.form.get("client_secret", "")


def _error(status: int, error: str, description: str) -> Response:
    body = {"error": error, "error_description": description, "status_code": status}
    return Response(json.dumps(body), status, mimetype="application/json")


class FakeHydraServer(StandInServer):
    """A FakeHydra served on `host:port` (0 = a free port) until `stop()`; a context manager."""

    def __init__(self, hydra: FakeHydra, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(hydra, "fake-hydra", host, port)
        self.hydra = hydra
        hydra.url = self.url


def serve_hydra(
    host: str = "127.0.0.1", port: int = 0, *, hydra: FakeHydra | None = None
) -> FakeHydraServer:
    """Start a Hydra stand-in in a background thread."""
    return FakeHydraServer(hydra or FakeHydra(), host, port)
