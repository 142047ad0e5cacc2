"""Check the proxy's JWT in an app behind it: signature (published JWKS), time, iss, aud.

claims = ory_wsgi.verify(token, jwks_url="http://127.0.0.1:4000/.ory/jwks.json",
                         issuer="https://app.example.com")
claims["sub"], claims["session"]["identity"]["traits"]
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry
from urllib3 import PoolManager
from urllib3.exceptions import HTTPError
from urllib3.util import Timeout

ALGORITHMS = ("ES256",)


class InvalidToken(Exception):
    """The token is not one to trust; the message says why (never the token itself)."""


class JwksUnavailable(InvalidToken):
    """The key set could not be fetched, so no token can be checked."""


class JwksVerifier:
    """Checks tokens against one JWKS URL; the key set is fetched once and cached.

    The cache is refreshed after `max_age` seconds, and at once when a token
    names a key id it does not hold (a key rotation), but at most every
    `refetch_interval` seconds, so tokens with made-up key ids cannot make it
    hammer the JWKS endpoint. Safe to share between threads.
    """

    def __init__(
        self,
        jwks_url: str,
        *,
        issuer: str = "",
        audience: str = "",
        leeway: int = 5,
        timeout: float = 3.0,
        max_age: float = 600.0,
        refetch_interval: float = 10.0,
    ) -> None:
        self.jwks_url = jwks_url
        self.leeway = leeway
        self.max_age = max_age
        self.refetch_interval = refetch_interval
        self._pool = PoolManager(
            num_pools=1, retries=False, timeout=Timeout(connect=timeout, read=timeout)
        )
        self._registry = JWSRegistry(algorithms=list(ALGORITHMS))
        options: dict[str, Any] = {"exp": {"essential": True}, "sub": {"essential": True}}
        if issuer:
            options["iss"] = {"essential": True, "value": issuer}
        if audience:
            options["aud"] = {"essential": True, "value": audience}
        self._claims = jwt.JWTClaimsRegistry(leeway=leeway, **options)
        self._keys: KeySet | None = None
        self._kids: frozenset[str] = frozenset()
        self._fetched_at = float("-inf")
        self._lock = threading.Lock()

    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims; raises `InvalidToken` if anything is wrong with it."""
        try:
            header = jws.extract_compact(token.encode("ascii")).headers()
        except (JoseError, ValueError, UnicodeError) as exc:
            raise InvalidToken(f"malformed token: {exc.__class__.__name__}") from None
        # joserfc takes any JSON that holds "alg" ('"alg"', '["alg"]'): only an object is a header.
        if not isinstance(header, dict):
            raise InvalidToken("malformed token: its header is not a JSON object")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("the token names no key id (kid)")
        keys = self._key_set(kid)
        try:
            decoded = jwt.decode(token, keys, algorithms=list(ALGORITHMS), registry=self._registry)
            self._claims.validate(decoded.claims)
        except JoseError as exc:
            raise InvalidToken(str(exc)) from None
        return decoded.claims

    def _key_set(self, kid: str) -> KeySet:
        now = time.monotonic()
        keys = self._keys
        if keys is not None and kid in self._kids and now - self._fetched_at < self.max_age:
            return keys
        with self._lock:
            if self._keys is not None and kid in self._kids:
                if now - self._fetched_at < self.max_age:
                    return self._keys
            if self._keys is None or now - self._fetched_at >= self.refetch_interval:
                self._fetch()
            if kid not in self._kids or self._keys is None:
                raise InvalidToken(f"no key {kid!r} in {self.jwks_url}")
            return self._keys

    def _fetch(self) -> None:
        try:
            answer = self._pool.request(
                "GET", self.jwks_url, headers={"Accept": "application/json"}
            )
        except HTTPError as exc:
            raise JwksUnavailable(f"cannot fetch {self.jwks_url}: {exc}") from None
        if answer.status != 200:
            raise JwksUnavailable(f"{self.jwks_url} answered {answer.status}")
        try:
            document = json.loads(answer.data)
            keys = KeySet.import_key_set(document)
        except (ValueError, JoseError, TypeError, KeyError) as exc:
            raise JwksUnavailable(f"{self.jwks_url} is not a JWK set: {exc}") from None
        self._keys = keys
        self._kids = frozenset(key.kid for key in keys if key.kid)
        self._fetched_at = time.monotonic()


_verifiers: dict[tuple[str, str, str, int], JwksVerifier] = {}
_verifiers_lock = threading.Lock()


def verify(
    token: str,
    jwks_url: str,
    *,
    issuer: str = "",
    audience: str = "",
    leeway: int = 5,
) -> dict[str, Any]:
    """The claims of a JWT from the proxy, checked; raises `InvalidToken` otherwise.

    Checks the ES256 signature with the key set at `jwks_url` (cached per
    process, refetched on an unknown key id), `exp` and `nbf` (with `leeway`
    seconds), and `iss` / `aud` when given. A leading `Bearer ` is accepted.
    """
    if token[:7].lower() == "bearer ":
        token = token[7:].strip()
    key = (jwks_url, issuer, audience, leeway)
    verifier = _verifiers.get(key)
    if verifier is None:
        with _verifiers_lock:
            verifier = _verifiers.setdefault(
                key, JwksVerifier(jwks_url, issuer=issuer, audience=audience, leeway=leeway)
            )
    return verifier.verify(token)
