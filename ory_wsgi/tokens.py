"""Session → JWT: mint ES256 tokens of Ory sessions, cached per worker.

The `session` claim is the session as the browser sees it through the proxy: Ory URLs in it
(`identity.schema_url`) are rewritten from Ory's own address to `<public URL>/.ory` by the
same `OryRewriter` that rewrites `/.ory/sessions/whoami` (see docs/configuration.md, "[jwt]").
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, NamedTuple

from joserfc import jwt
from joserfc.jws import JWSRegistry

from ory_wsgi.errors import ConfigError
from ory_wsgi.keys import ALGORITHM, KeySet
from ory_wsgi.ory.client import rfc3339_epoch
from ory_wsgi.ory.rewrite import OryRewriter

RESERVED_CLAIMS = frozenset({"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "session"})
# A cached token is handed out until this share of its life has passed, so
# the app never receives one about to expire.
REUSE_FRACTION = 0.9
# Fields whose change means the token's content is stale: a step-up (aal,
# authenticated_at), an extended session (expires_at), edited traits (updated_at).
FINGERPRINT_PATHS = (
    ("authenticated_at",),
    ("authenticator_assurance_level",),
    ("expires_at",),
    ("identity", "id"),
    ("identity", "updated_at"),
)


class CachedToken(NamedTuple):
    fingerprint: tuple[Any, ...]
    kid: str
    token: str
    reuse_until: float


class TokenMinter:
    """Turns a whoami session into a signed JWT for the upstream.

    Built once per worker; `mint` is safe to call from many threads.
    """

    def __init__(
        self,
        keys: KeySet,
        issuer: str,
        audience: str = "",
        ttl: float = 60.0,
        claims: Mapping[str, str] | None = None,
        cache_size: int = 10000,
        *,
        rewriter: OryRewriter | None = None,
        default_audience: str = "",
    ) -> None:
        self.keys = keys
        self.rewriter = rewriter
        self.issuer = issuer
        self.audience = audience
        # `aud` when neither `audience` nor the rule's claims give one.
        self.default_audience = default_audience
        self.ttl = ttl
        self.extra_claims = _split_claim_paths(claims or {})
        self.cache_size = cache_size
        self._cache: OrderedDict[str, CachedToken] = OrderedDict()
        self._cache_kid = keys.signing_kid
        self._lock = threading.Lock()
        self._registry = JWSRegistry(algorithms=[ALGORITHM])

    def mint(
        self,
        session: Mapping[str, Any] | None,
        *,
        subject: str | None = None,
        claims_json: str = "",
    ) -> str:
        """An ES256 JWT of `session`, from the cache while it is fresh enough.

        The access-rule pipeline's `id_token` mutator also passes `subject` (the
        authenticated subject, which replaces `identity.id` as `sub`; `session`
        may then be None) and `claims_json`, the rendered claims template: a
        JSON object merged into the claims, part of the cache key, parsed only
        when a token is signed (ValueError if it is not a JSON object).
        """
        self.keys.reload_if_changed()
        material = self.keys.material
        if material.kid != self._cache_kid:
            with self._lock:
                self._cache.clear()
                self._cache_kid = material.kid
        session_id = session.get("id") if session is not None else ""
        if session is not None and not isinstance(session_id, str):
            session_id = None
        if session_id is None or self.cache_size <= 0:
            return self._sign(session, material.kid, material.signing_key, subject, claims_json)[0]
        key = session_id
        if subject is not None or claims_json:
            # A NUL cannot occur in a session id or a subject from Kratos.
            key = f"{session_id}\0{subject}\0{claims_json}"
        fingerprint = tuple(_lookup(session, path) for path in FINGERPRINT_PATHS) if session else ()
        with self._lock:
            cached = self._cache.get(key)
            if (
                cached is not None
                and cached.fingerprint == fingerprint
                and cached.kid == material.kid
                and time.time() < cached.reuse_until
            ):
                self._cache.move_to_end(key)
                return cached.token
        token, reuse_until = self._sign(
            session, material.kid, material.signing_key, subject, claims_json
        )
        with self._lock:
            self._cache[key] = CachedToken(fingerprint, material.kid, token, reuse_until)
            self._cache.move_to_end(key)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return token

    @property
    def cached_tokens(self) -> int:
        return len(self._cache)

    def forget(self, session_id: str) -> None:
        """Drop the cached token of a session (after a logout)."""
        prefix = f"{session_id}\0"
        with self._lock:
            self._cache.pop(session_id, None)
            for key in [k for k in self._cache if k.startswith(prefix)]:
                del self._cache[key]

    def _sign(
        self,
        session: Mapping[str, Any] | None,
        kid: str,
        key: Any,
        subject: str | None = None,
        claims_json: str = "",
    ) -> tuple[str, float]:
        if session is not None and self.rewriter is not None:
            session = _as_seen_through_proxy(session, self.rewriter)
        now = time.time()
        issued_at = int(now)
        expires = issued_at + int(self.ttl)
        session_end = rfc3339_epoch(session.get("expires_at")) if session is not None else None
        if session_end is not None:
            expires = max(issued_at, min(expires, int(session_end)))
        claims: dict[str, Any] = {}
        if session is not None:
            for name, path in self.extra_claims:
                value = _lookup(session, path)
                if value is not None:
                    claims[name] = value
        if claims_json:
            rule_claims = json.loads(claims_json, parse_constant=_not_json)
            if not isinstance(rule_claims, dict):
                raise ValueError("the claims template did not render a JSON object")
            claims.update(rule_claims)
        claims.update(
            iss=self.issuer,
            sub=subject if subject is not None else _lookup(session or {}, ("identity", "id")),
            iat=issued_at,
            nbf=issued_at,
            exp=expires,
            jti=str(uuid.uuid4()),
        )
        if session is not None:
            claims["session"] = session
        if self.audience:
            claims["aud"] = self.audience
        elif self.default_audience and "aud" not in claims:
            claims["aud"] = self.default_audience
        header = {"alg": ALGORITHM, "kid": kid}
        token = jwt.encode(header, claims, key, registry=self._registry)
        return token, issued_at + (expires - issued_at) * REUSE_FRACTION


def _not_json(name: str) -> Any:
    raise ValueError(f"the claims template rendered {name}, which is not JSON")


def _split_claim_paths(claims: Mapping[str, str]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    for name in claims:
        if name in RESERVED_CLAIMS:
            raise ConfigError(f"[jwt.claims] {name}: a reserved claim, the proxy sets it")
    return tuple((name, tuple(path.split("."))) for name, path in claims.items())


def _as_seen_through_proxy(session: Mapping[str, Any], rewriter: OryRewriter) -> Any:
    """The session with Ory's URLs as `/.ory/sessions/whoami` shows them through the proxy.

    Once per minted token (tokens are cached), so the JSON round trip costs little.
    """
    text = json.dumps(session, separators=(",", ":"), ensure_ascii=False).encode()
    rewritten = b"".join(rewriter.rewrite_body([text], "application/json", ""))
    return session if rewritten == text else json.loads(rewritten)


def _lookup(document: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = document
    for part in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value
