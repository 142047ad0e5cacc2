"""The `jwt` authenticator in all three modes: the same tokens, the same decisions.

One rule file (Oathkeeper's JSON format) guards `/api/` with `jwt` against the
token issuer stand-in, then `bearer_token` for tokens that are not JWTs. It is
served by the proxy under gunicorn, by nginx `auth_request` asking the
decisions endpoint, and by a Flask app with the embedded middleware; each
request (a good token, a Kratos session token, and the attacks of
tests/test_pipeline_authenticator_jwt.py) must come to the same status and,
when allowed, to the same subject in the JWT the app receives.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask import request as flask_request
from gateways import Nginx, find_binary
from joserfc.jwk import KeySet
from ory_flows import PASSWORD
from servers import Gunicorn, ThreadedServer, free_port
from test_pipeline_modes import Mode, Seen, jwks

from ory_wsgi.middleware import OryMiddleware
from ory_wsgi.settings import load_settings
from ory_wsgi.testing import FakeKratos
from ory_wsgi.testing.issuer import FakeIssuer, FakeIssuerServer, serve_issuer

ENABLED = """
[access_rules]
repositories = ["{rules}"]
[authenticators.jwt]
enabled = true
[authenticators.bearer_token]
enabled = true
[authorizers.allow]
enabled = true
[mutators.id_token]
enabled = true
[errors.handlers.json]
enabled = true
"""


def rules(issuer: FakeIssuer) -> list[dict[str, Any]]:
    return [
        {
            "id": "api",
            "match": {"methods": ["GET"], "url": "<https?>://<[^/]+>/api/<.*>"},
            "authenticators": [
                {
                    "handler": "jwt",
                    "config": {
                        "jwks_urls": [issuer.jwks_url],
                        "trusted_issuers": [issuer.iss],
                        "target_audience": ["api"],
                        "required_scope": ["read"],
                        "scope_strategy": "exact",
                    },
                },
                {"handler": "bearer_token"},
            ],
            "authorizer": {"handler": "allow"},
            "mutators": [{"handler": "id_token"}],
            "errors": [{"handler": "json"}],
        }
    ]


def config_text(tmp_path: Path, issuer: FakeIssuer, head: str) -> Path:
    rules_file = tmp_path / "rules.json"
    rules_file.write_text(json.dumps(rules(issuer)))
    config = tmp_path / "ory.toml"
    config.write_text(head + ENABLED.format(rules=rules_file))
    return config


@pytest.fixture(params=["proxy", "nginx", "flask"])
def mode(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    upstream: ThreadedServer,
    fake_ory: FakeKratos,
    fake_issuer: FakeIssuer,
) -> Iterator[Mode]:
    if request.param == "flask":
        config = config_text(
            tmp_path,
            fake_issuer,
            f'[proxy]\npublic_url = "http://localhost"\nstate_dir = "{tmp_path}"\n'
            f'[ory]\nsdk_url = "{fake_ory.url}"\n',
        )
        app = Flask(__name__)

        @app.route("/<path:anything>")
        def echo(anything: str) -> dict[str, Any]:
            return {"headers": dict(flask_request.headers)}

        app.wsgi_app = OryMiddleware(app.wsgi_app, load_settings(config, env={}))  # type: ignore[method-assign]
        client = app.test_client(use_cookies=False)
        keys = KeySet.import_key_set(client.get("/.ory/jwks.json").get_json())
        yield Mode("flask", "http://localhost", keys, relays_headers=True, flask=client)
        return
    if request.param == "nginx" and find_binary(Nginx.binary_name) is None:
        if os.environ.get("CI"):
            raise RuntimeError("nginx is required in CI (.ci/run installs it)")
        pytest.skip(f"nginx is not installed (apt-get install {Nginx.package})")
    port = free_port()
    config = config_text(
        tmp_path,
        fake_issuer,
        f'[proxy]\nupstream = "{upstream.url}"\npublic_url = "http://127.0.0.1:{port}"\n'
        'trusted_proxies = ["127.0.0.1/32"]\n'
        f'[ory]\nsdk_url = "{fake_ory.url}"\n[decisions]\nenabled = true\n',
    )
    if request.param == "proxy":
        server = Gunicorn(f'ory_wsgi:make_app("{config}")', cwd=tmp_path, port=port)
        try:
            yield Mode("proxy", server.url, jwks(server.url), relays_headers=True)
        finally:
            server.stop()
        return
    server = Gunicorn(f'ory_wsgi:make_app("{config}")', cwd=tmp_path)
    gateway = Nginx(tmp_path, server.port, upstream.port, port)
    try:
        yield Mode("nginx", gateway.url, jwks(server.url), relays_headers=False)
    finally:
        gateway.stop()
        server.stop()


@pytest.fixture
def attacker() -> Iterator[FakeIssuer]:
    server: FakeIssuerServer = serve_issuer()
    yield server.issuer
    server.stop()


def hs256_with_public_key(issuer: FakeIssuer, claims: dict[str, Any]) -> str:
    rsa = issuer.key("RS256")
    signing_input = issuer.forge({"alg": "HS256", "kid": str(rsa.kid)}, claims).rstrip(".")
    mac = hmac.new(rsa.as_pem(private=False), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def test_jwt_rules_decide_alike_in_every_mode(
    mode: Mode, fake_issuer: FakeIssuer, fake_ory: FakeKratos, attacker: FakeIssuer
) -> None:
    identity = fake_ory.add_identity("ada@example.com", PASSWORD)
    _, session_token = fake_ory.create_session(identity["id"])
    good = {"sub": "client-7", "aud": ["api"], "scope": "read write"}
    now = int(time.time())
    tampered_parts = fake_issuer.mint(good, alg="ES256").split(".")
    tampered_parts[1] = (
        base64.urlsafe_b64encode(
            json.dumps({**good, "sub": "admin", "iss": fake_issuer.iss, "exp": now + 60}).encode()
        )
        .decode()
        .rstrip("=")
    )
    ec_kid = str(fake_issuer.key("ES256").kid)
    cases: list[tuple[str, str, Seen]] = [
        ("good ES256", fake_issuer.mint(good, alg="ES256"), Seen(200, "client-7")),
        ("good RS256", fake_issuer.mint(good, alg="RS256"), Seen(200, "client-7")),
        ("kratos session token", session_token, Seen(200, str(identity["id"]))),
        ("no scope", fake_issuer.mint({**good, "scope": "write"}, alg="ES256"), Seen(403)),
        ("other audience", fake_issuer.mint({**good, "aud": "billing"}, alg="ES256"), Seen(401)),
        ("expired", fake_issuer.mint({**good, "exp": now - 3600}, alg="ES256"), Seen(401)),
        ("no exp", fake_issuer.mint({**good, "exp": None}, alg="ES256"), Seen(401)),
        (
            "untrusted iss",
            fake_issuer.mint({**good, "iss": "https://evil"}, alg="ES256"),
            Seen(401),
        ),
        ("tampered", ".".join(tampered_parts), Seen(401)),
        ("alg none", fake_issuer.forge({"alg": "none", "kid": ec_kid}, good), Seen(401)),
        ("alg NoNe", fake_issuer.forge({"alg": "NoNe", "kid": ec_kid}, good), Seen(401)),
        (
            "hs256 public key",
            hs256_with_public_key(fake_issuer, {**good, "exp": now + 60}),
            Seen(401),
        ),
        (
            "jku to the attacker",
            attacker.mint(
                {**good, "iss": fake_issuer.iss},
                alg="ES256",
                header={"jku": attacker.jwks_url, "jwk": attacker.key("ES256").as_dict()},
            ),
            Seen(401),
        ),
        (
            "attacker key, our kid",
            attacker.mint({**good, "iss": fake_issuer.iss}, alg="ES256", kid=ec_kid),
            Seen(401),
        ),
    ]
    for name, token, expected in cases:
        seen = mode.get("/api/orders", {"Authorization": f"Bearer {token}"})
        seen.audience = None  # the id_token's aud is not what is compared here
        assert seen == Seen(expected.status, expected.subject), (mode.name, name)
    assert attacker.jwks_fetches == 0
    # One fetch per worker for the whole run: good tokens, attacks and unknown kids included.
    assert 1 <= fake_issuer.jwks_fetches <= 2
