"""An OAuth2 client-credentials access token, fetched once and refreshed before it expires.

    grant = ClientCredentials(endpoint, "client-id", "secret", scope=("introspect",),
                              audience="", where=where)            # at load
    authorization = grant.authorization(retry)                     # "Bearer ory_at_..."

Oathkeeper's `pre_authorization` for `oauth2_introspection`: the introspection
call carries a token this client obtained at `token_url` (RFC 6749 §4.4, the
client authenticated with HTTP Basic, its id and secret form-urlencoded as
§2.3.1 says). The token is kept until shortly before its `expires_in` ends
(a tenth of its lifetime, at most a minute), then one thread fetches a new one
while the others wait for it; `forget(token)` drops a token the service
refused. A failed fetch raises `GrantFailed` (the caller answers 503) and is
not kept: the next request asks again.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
from urllib.parse import quote, urlencode

from ory_wsgi.pipeline.errors import DecisionError
from ory_wsgi.pipeline.service_call import Endpoint, Retry, post

log = logging.getLogger("ory_wsgi.pipeline")

# RFC 6750 §2.1 b64token: what may follow "Bearer " in a header.
B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
DEFAULT_LIFETIME = 300.0
MAX_EARLY = 60.0


class GrantFailed(Exception):
    """The token endpoint gave no usable token; the message says why (for the log line)."""


class ClientCredentials:
    """One client's token for one token URL; thread-safe, one fetch at a time."""

    def __init__(
        self,
        endpoint: Endpoint,
        client_id: str,
        client_secret: str,
        *,
        scope: tuple[str, ...],
        audience: str,
        where: str,
    ) -> None:
        self.endpoint = endpoint
        self.where = where
        pair = f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}"
        self._basic = "Basic " + base64.b64encode(pair.encode()).decode()
        form = {"grant_type": "client_credentials"}
        if scope:
            form["scope"] = " ".join(scope)
        if audience:
            form["audience"] = audience
        self._body = urlencode(form).encode()
        self._lock = threading.Lock()
        self._token = ""
        self._refresh_at = 0.0

    def authorization(self, retry: Retry) -> str:
        """`Bearer <token>` for the next call, fetching a token when none is fresh."""
        token = self._token
        if token and time.monotonic() < self._refresh_at:
            return f"Bearer {token}"
        with self._lock:
            # Another thread may have fetched while this one waited for the lock.
            if not self._token or time.monotonic() >= self._refresh_at:
                self._token, self._refresh_at = self._fetch(retry)
            return f"Bearer {self._token}"

    def forget(self, token: str) -> None:
        with self._lock:
            if self._token == token:
                self._token, self._refresh_at = "", 0.0

    def _fetch(self, retry: Retry) -> tuple[str, float]:
        headers = {
            "Authorization": self._basic,
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
        }
        url = self.endpoint.url
        try:
            reply = post(
                self.endpoint, headers, self._body, where=self.where, retry=retry, read=True
            )
        except DecisionError as exc:
            # post() logged why (unreachable, an unreadable answer).
            raise GrantFailed(f"no answer from the token endpoint {url}: {exc}") from None
        if reply.status != 200:
            raise GrantFailed(f"the token endpoint {url} answered {reply.status}")
        try:
            answer = json.loads(reply.body)
        except ValueError:
            answer = None
        token = answer.get("access_token") if isinstance(answer, dict) else None
        if not isinstance(token, str) or not B64TOKEN.fullmatch(token):
            raise GrantFailed(f"the token endpoint {url} answered no usable access_token")
        expires_in = answer.get("expires_in") if isinstance(answer, dict) else None
        lifetime = (
            float(expires_in)
            if isinstance(expires_in, int | float) and not isinstance(expires_in, bool)
            else DEFAULT_LIFETIME
        )
        early = min(lifetime / 10, MAX_EARLY)
        return token, time.monotonic() + max(lifetime - early, 0.0)
