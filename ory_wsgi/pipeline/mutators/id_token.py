"""`id_token` mutator: the §8 JWT for the upstream, per rule (Oathkeeper's `id_token`).

    mutators = [{handler = "id_token", config = {ttl = "5m", claims = '{"aud": ["api"]}'}}]

Config (merged over `[mutators.id_token] config`):
- `issuer_url`: `iss`; default `[jwt] issuer`, else the public URL.
- `ttl`: a duration (`"60s"`, `"15m"`, `"1h30m"` as Go writes them, or seconds);
  default `[jwt] ttl`. The token never outlives the Kratos session.
- `audience`: `aud`. When unset, the `aud` of `claims` is used, else `[jwt] audience`.
- `claims`: a JSON template (compiled with `json=True`), rendered per request and
  merged into the claims. `iss`, `sub`, `iat`, `nbf`, `exp` and `jti` are always
  ours, and so is `session` when a Kratos session authenticated the request.
- `only_with_session` (ours, default false): mint only when a Kratos session
  (cookie_session / bearer_token) authenticated the request. Oathkeeper signs for
  any subject (`anonymous` included), which is the default; the `[[protect]]` /
  `[[public]]` shorthand sets it.
- `jwks_url` (Oathkeeper's signing keys): accepted and ignored, with one warning
  at load: ory_wsgi signs with `[jwt]`'s key set, published at `/.ory/jwks.json`.

`sub` is the authenticated subject (Kratos: the identity id); `[jwt.claims]`
apply as in §8 when there is a Kratos session. Sets
`session.header["Authorization"] = "Bearer <jwt>"`.

One `TokenMinter` per distinct (issuer, audience, ttl, claims template) is built
at load and shared by the rules that agree on them; it caches each token until
90 % of its life has passed, keyed by session (and its fingerprint), subject and
rendered claims, and drops its cache when the signing key rotates.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from ory_wsgi.errors import ConfigError
from ory_wsgi.pipeline.errors import internal
from ory_wsgi.pipeline.handler import Config
from ory_wsgi.pipeline.handler_config import boolean, known_keys, string
from ory_wsgi.pipeline.header_values import render
from ory_wsgi.pipeline.mutators.context import template_context
from ory_wsgi.pipeline.services import Services
from ory_wsgi.pipeline.state import AuthSession, RequestFacts
from ory_wsgi.rules.template import Template, compile_template
from ory_wsgi.tokens import TokenMinter

log = logging.getLogger("ory_wsgi.pipeline.mutators")

KEYS = ("issuer_url", "ttl", "audience", "claims", "only_with_session", "jwks_url")
OURS = frozenset({"iss", "sub", "iat", "nbf", "exp", "jti"})
MAX_TTL = 366 * 24 * 3600.0
MAX_MINTERS = 256

_GO_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_GO_PART_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_GO_DURATION_RE = re.compile(rf"(?:{_GO_PART_RE.pattern})+")


def go_duration(raw: Any, where: str) -> float:
    """Seconds from Go's `time.ParseDuration` syntax (`"1h30m"`, `"250ms"`) or a number."""
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        seconds = float(raw)
    elif isinstance(raw, str) and _GO_DURATION_RE.fullmatch(raw.strip()):
        seconds = sum(
            float(number) * _GO_UNITS[unit] for number, unit in _GO_PART_RE.findall(raw.strip())
        )
    else:
        raise ConfigError(f'{where}: ttl must be a duration like "60s", "15m" or "1h30m"')
    if not 1.0 <= seconds <= MAX_TTL:
        raise ConfigError(f"{where}: ttl must be between 1s and a year, got {raw!r}")
    return seconds


@dataclass(frozen=True, slots=True)
class PreparedIdToken:
    where: str
    minter: TokenMinter
    claims: Template | None
    only_with_session: bool


class IdTokenMutator:
    name = "id_token"

    def __init__(self, services: Services) -> None:
        self.services = services
        self._minters: OrderedDict[tuple[str, str, float, str], TokenMinter] = OrderedDict()
        self._lock = threading.Lock()
        self._warned_jwks_url = False

    def prepare(self, config: Config, where: str) -> PreparedIdToken:
        known_keys(config, KEYS, where)
        keys = self.services.keys
        if keys is None:
            raise ConfigError(f"{where}: id_token needs the [jwt] key set ([jwt] enabled = false)")
        jwt = self.services.settings.jwt
        issuer = string(config, "issuer_url", where) or jwt.issuer or self.services.public_url
        audience = string(config, "audience", where)
        ttl = go_duration(config["ttl"], where) if "ttl" in config else jwt.ttl
        source = string(config, "claims", where)
        claims = _claims_template(source, where) if source else None
        if "jwks_url" in config:
            string(config, "jwks_url", where)
            if not self._warned_jwks_url:
                self._warned_jwks_url = True
                log.warning(
                    "%s: id_token jwks_url is ignored: tokens are signed with the [jwt] key set "
                    "(published at /.ory/jwks.json)",
                    where,
                )
        key = (issuer, audience, ttl, source)
        with self._lock:
            minter = self._minters.get(key)
            if minter is not None:
                self._minters.move_to_end(key)
            else:
                minter = TokenMinter(
                    keys,
                    issuer,
                    audience,
                    ttl,
                    jwt.claims,
                    rewriter=self.services.rewriter,
                    default_audience=jwt.audience,
                )
                self._minters[key] = minter
                # Reloads with edited configs must not pile up minters (and their
                # caches); a rule already prepared keeps its own.
                while len(self._minters) > MAX_MINTERS:
                    self._minters.popitem(last=False)
        return PreparedIdToken(where, minter, claims, boolean(config, "only_with_session", where))

    def mutate(self, request: RequestFacts, session: AuthSession, prepared: Any) -> None:
        assert isinstance(prepared, PreparedIdToken)
        if prepared.only_with_session and session.ory_session is None:
            return
        claims_json = ""
        if prepared.claims is not None:
            claims_json = prepared.claims.constant or render(
                prepared.claims, template_context(session), prepared.where
            )
        try:
            token = prepared.minter.mint(
                session.ory_session, subject=session.subject, claims_json=claims_json
            )
        except ValueError as exc:
            log.error("%s: id_token claims: %s; refused", prepared.where, exc)
            raise internal("The token for the upstream could not be built") from exc
        session.header["Authorization"] = "Bearer " + token


def _claims_template(source: str, where: str) -> Template:
    template = compile_template(source, where=f"{where} claims", json=True)
    if template.constant is not None:
        try:
            document = json.loads(template.constant)
        except ValueError as exc:
            raise ConfigError(f"{where} claims: not JSON ({exc})") from None
        if not isinstance(document, dict):
            raise ConfigError(f"{where} claims: must be a JSON object")
    return template
