"""A token issuer stand-in: signing keys, a JWKS endpoint over HTTP, and tokens minted on demand.

    issuer = FakeIssuer()
    with serve_issuer(issuer=issuer) as server:   # server.url; issuer.jwks_url
        token = issuer.mint({"sub": "user-1", "aud": "api"}, alg="ES256")
        new_kid = issuer.rotate("ES256")           # a new signing key, the old one still published
    assert issuer.jwks_fetches == 1

For the `jwt` authenticator (docs/rules-handlers.md) and for users' own tests
(pytest fixture `fake_issuer`). Served like an OpenID provider:
- `GET /.well-known/jwks.json`: the public keys (every key minted with so far,
  newest first; `retire(kid)` removes one), counted in `jwks_fetches`;
- `GET /.well-known/openid-configuration`: `issuer` and `jwks_uri`.
`mint(claims, alg=..., kid=...)` signs with joserfc: RS256/384/512,
PS256/384/512, ES256/384/512, EdDSA (or Ed25519) or HS256/384/512 (a key of the family is
generated on first use; HS keys are `oct` and published too, for tests of the
algorithm-confusion defences). `iss` (the issuer's URL), `iat` and `exp`
(`ttl` seconds) are filled in unless given; a claim given as None is left out.
`forge(header, claims, signature)` assembles a token without any check, for
attack tests (alg none, a foreign `kid`, `jku` headers).

`keys_file` loads a private JWK set (or `write_private(path)` writes one) so
tokens can be minted with keys kept in a file; `write_jwks(path)` writes the
public set for a `file://` JWKS URL. Faults: `down = True` drops every
connection unanswered, `delay` slows each answer, `fail_jwks(500)` answers that
status (with `Retry-After` when given) until `reset_faults()` or `reset()`.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey, Key, KeySet, OctKey, OKPKey, RSAKey
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response

from ory_wsgi.testing.server import _QuietRequestHandler
from ory_wsgi.wsgi import StartResponse, WSGIEnvironment

JWKS_PATH = "/.well-known/jwks.json"
CONFIGURATION_PATH = "/.well-known/openid-configuration"
DEFAULT_TTL = 300
CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}


def family(alg: str) -> str:
    """Which key serves `alg`: algorithms of one family share a key (RS256 and PS512 an RSA key)."""
    if alg.startswith(("RS", "PS")):
        return "RSA"
    if alg in CURVES:
        return alg
    if alg in ("EdDSA", "Ed25519"):
        return "EdDSA"
    if alg.startswith("HS"):
        return "oct"
    raise ValueError(f"the stand-in does not sign {alg!r}")


def _generate(kind: str, kid: str) -> Key:
    parameters: Any = {"kid": kid, "use": "sig"}
    if kind == "RSA":
        return RSAKey.generate_key(2048, parameters=parameters)
    if kind in CURVES:
        return ECKey.generate_key(CURVES[kind], parameters=parameters)
    if kind == "EdDSA":
        return OKPKey.generate_key("Ed25519", parameters=parameters)
    return OctKey.generate_key(256, parameters=parameters)


class FakeIssuer:
    """Signing keys by family, a JWKS counter and injected faults; a WSGI app."""

    def __init__(self, issuer: str = "", keys_file: str | Path | None = None) -> None:
        self._lock = threading.Lock()
        self.url = ""  # set by the server that serves it
        self.issuer = issuer  # `iss`; the server's URL when empty
        self.keys_file = keys_file
        self.reset()

    def reset(self) -> None:
        """Fresh keys (or the file's), no counters, no faults."""
        with self._lock:
            self.keys: list[Key] = []  # newest first: what the JWKS publishes
            self.signing: dict[str, Key] = {}  # family -> the key that signs now
            self.jwks_fetches = 0
            self.fault: tuple[int, str | None] | None = None
            self.delay = 0.0
            self.down = False
            self._serial = 0
        if self.keys_file is not None:
            self.load_private(self.keys_file)

    @property
    def iss(self) -> str:
        return self.issuer or self.url

    @property
    def jwks_url(self) -> str:
        return self.url + JWKS_PATH

    def key(self, alg: str = "RS256") -> Key:
        """The key that signs `alg` now (generated on first use)."""
        kind = family(alg)
        with self._lock:
            current = self.signing.get(kind)
        return current if current is not None else self._add(kind)

    def rotate(self, alg: str = "RS256") -> str:
        """A new signing key for `alg`'s family, published first; the old one stays published."""
        return str(self._add(family(alg)).kid)

    def retire(self, kid: str) -> None:
        """Stop publishing (and signing with) the key `kid`."""
        with self._lock:
            self.keys = [k for k in self.keys if k.kid != kid]
            self.signing = {f: k for f, k in self.signing.items() if k.kid != kid}

    def _add(self, kind: str, kid: str = "") -> Key:
        with self._lock:
            self._serial += 1
            kid = kid or f"{kind.lower()}-{self._serial}-{int(time.time())}"
        key = _generate(kind, kid)
        with self._lock:
            self.keys.insert(0, key)
            self.signing[kind] = key
        return key

    def mint(
        self,
        claims: Mapping[str, Any] | None = None,
        *,
        alg: str = "RS256",
        kid: str | None = None,
        ttl: float = DEFAULT_TTL,
        header: Mapping[str, Any] | None = None,
        key: Key | None = None,
    ) -> str:
        """A signed JWT: `iss`, `iat`, `exp` filled in unless given (None leaves one out).

        `kid` overrides the header's kid (the key stays the family's signing key
        unless `key` is given); `header` adds members (`typ`, `jku`, ...).
        """
        signer = key if key is not None else self.key(alg)
        now = int(time.time())
        full: dict[str, Any] = {"iss": self.iss, "iat": now, "exp": now + int(ttl)}
        full.update(claims or {})
        full = {name: value for name, value in full.items() if value is not None}
        protected: dict[str, Any] = {"alg": alg, "kid": signer.kid if kid is None else kid}
        protected.update(header or {})
        return jwt.encode(protected, full, signer, algorithms=[alg])

    @staticmethod
    def forge(header: Mapping[str, Any], claims: Mapping[str, Any], signature: bytes = b"") -> str:
        """A compact token assembled as given, with no check at all (for attack tests)."""
        return ".".join(
            _b64(part)
            for part in (
                json.dumps(dict(header), separators=(",", ":")).encode(),
                json.dumps(dict(claims), separators=(",", ":")).encode(),
                signature,
            )
        )

    def jwks(self) -> dict[str, Any]:
        """The public JWK set as served (oct keys, being secrets, are published whole)."""
        with self._lock:
            keys = list(self.keys)
        return {"keys": [k.as_dict(private=isinstance(k, OctKey)) for k in keys]}

    def write_jwks(self, path: str | Path) -> Path:
        """The public JWK set, written for a `file://` JWKS URL."""
        target = Path(path)
        target.write_text(json.dumps(self.jwks()))
        return target

    def write_private(self, path: str | Path) -> Path:
        """Every key with its private part, as `keys_file` reads it back."""
        with self._lock:
            keys = list(self.keys)
        target = Path(path)
        target.write_text(json.dumps({"keys": [k.as_dict(private=True) for k in keys]}))
        target.chmod(0o600)
        return target

    def load_private(self, path: str | Path) -> None:
        """Sign and publish with a JWK set file's private keys (the first of a family signs)."""
        document = json.loads(Path(path).read_text())
        loaded = KeySet.import_key_set(document).keys
        with self._lock:
            self.keys = [*loaded, *self.keys]
            for loaded_key in reversed(loaded):
                self.signing[_family_of(loaded_key)] = loaded_key

    def fail_jwks(self, status: int, retry_after: str | None = None) -> None:
        self.fault = (status, retry_after)

    def reset_faults(self) -> None:
        """Up again: no injected status, delay or outage (keys and counters stay)."""
        self.fault = None
        self.delay = 0.0
        self.down = False

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        return self.answer(Request(environ))(environ, start_response)

    def answer(self, request: Request) -> Response:
        if request.path == CONFIGURATION_PATH:
            document = {"issuer": self.iss, "jwks_uri": self.jwks_url}
            return Response(json.dumps(document), mimetype="application/json")
        if request.path != JWKS_PATH:
            return Response('{"error":"not_found"}', 404, mimetype="application/json")
        with self._lock:
            self.jwks_fetches += 1
        if self.delay:
            time.sleep(self.delay)
        if self.fault is not None:
            status, retry_after = self.fault
            response = Response('{"error":"injected by the test"}', status)
            if retry_after is not None:
                response.headers["Retry-After"] = retry_after
            return response
        return Response(json.dumps(self.jwks()), mimetype="application/jwk-set+json")


def _family_of(key: Key) -> str:
    if isinstance(key, RSAKey):
        return "RSA"
    if isinstance(key, ECKey):
        return {curve: alg for alg, curve in CURVES.items()}[key.curve_name]
    if isinstance(key, OKPKey):
        return "EdDSA"
    return "oct"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class _IssuerRequestHandler(_QuietRequestHandler):
    """Drops the connection without a word while the issuer is `down` (an outage)."""

    def handle_one_request(self) -> None:
        app = getattr(self.server, "app", None)
        if isinstance(app, FakeIssuer) and app.down:
            # Kept-alive connections too: the client sees the connection closed unanswered.
            self.close_connection = True
            return
        super().handle_one_request()


class FakeIssuerServer:
    """A FakeIssuer served on `host:port` (0 = a free port) until `stop()`; a context manager."""

    def __init__(self, issuer: FakeIssuer, host: str = "127.0.0.1", port: int = 0) -> None:
        self.issuer = issuer
        self._server: BaseWSGIServer = make_server(
            host, port, issuer, threaded=True, request_handler=_IssuerRequestHandler
        )
        self.port = int(self._server.server_port)
        self.url = f"http://{host}:{self.port}"
        issuer.url = self.url
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"fake-issuer-{self.port}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> FakeIssuerServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def serve_issuer(
    host: str = "127.0.0.1", port: int = 0, *, issuer: FakeIssuer | None = None
) -> FakeIssuerServer:
    """Start a token issuer stand-in in a background thread."""
    return FakeIssuerServer(issuer or FakeIssuer(), host, port)
