"""One oauth2_introspection rule, three modes, the same decisions; Hydra's stand-in over HTTP.

The rule file (Oathkeeper's JSON) is served by the proxy under gunicorn, by
nginx `auth_request` asking the decisions endpoint, and by a Flask app with
the embedded middleware in-process. Each case (a good token, inactive, a
missing scope or audience, a token of another kind or in the wrong place,
Hydra down or rate-limiting) expects the same answer in all three, except
where nginx cannot carry it: it takes only 2xx/401/403 from the decisions
endpoint, so a 503 or 429 there becomes 403 (SPEC §16).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask import request as flask_request
from gateways import Nginx, find_binary
from joserfc.jwk import KeySet
from servers import Gunicorn, ThreadedServer, free_port
from test_pipeline_modes import HOST, Mode, Seen, jwks

from ory_wsgi.middleware import OryMiddleware
from ory_wsgi.settings import load_settings
from ory_wsgi.testing import FakeKratos
from ory_wsgi.testing.hydra import FakeHydra

ENABLED = """
[access_rules]
repositories = ["{rules}"]
[authenticators.oauth2_introspection]
enabled = true
[authorizers.allow]
enabled = true
[mutators.id_token]
enabled = true
[mutators.header]
enabled = true
[errors.handlers.json]
enabled = true
"""


def rules(hydra: FakeHydra) -> list[dict[str, Any]]:
    return [
        {
            "id": "api",
            "match": {"methods": ["GET", "POST"], "url": f"<https?>://{HOST}/api/<.*>"},
            "authenticators": [
                {
                    "handler": "oauth2_introspection",
                    "config": {
                        "introspection_url": hydra.introspection_url,
                        "prefix": "ory_at_",
                        "required_scope": ["photos.read"],
                        "scope_strategy": "hierarchic",
                        "target_audience": ["api"],
                        "trusted_issuers": [hydra.issuer],
                    },
                }
            ],
            "authorizer": {"handler": "allow"},
            "mutators": [
                {"handler": "id_token", "config": {"claims": '{"aud": ["members"]}'}},
                {"handler": "header", "config": {"headers": {"X-User": "{{ print .Subject }}"}}},
            ],
            "errors": [{"handler": "json"}],
        }
    ]


def write_config(tmp_path: Path, head: str, hydra: FakeHydra) -> Path:
    rules_file = tmp_path / "rules.json"
    rules_file.write_text(json.dumps(rules(hydra)))
    config = tmp_path / "ory.toml"
    config.write_text(head + ENABLED.format(rules=rules_file))
    return config


@pytest.fixture(params=["proxy", "nginx", "flask"])
def mode(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    upstream: ThreadedServer,
    fake_ory: FakeKratos,
    fake_hydra: FakeHydra,
) -> Iterator[Mode]:
    if request.param in ("proxy", "nginx"):
        if request.param == "nginx" and find_binary(Nginx.binary_name) is None:
            if os.environ.get("CI"):
                raise RuntimeError("nginx is required in CI (.ci/run installs it)")
            pytest.skip(f"nginx is not installed (apt-get install {Nginx.package})")
        port = free_port()
        head = (
            f'[proxy]\nupstream = "{upstream.url}"\npublic_url = "http://127.0.0.1:{port}"\n'
            'trusted_proxies = ["127.0.0.1/32"]\n'
            f'[ory]\nsdk_url = "{fake_ory.url}"\n[decisions]\nenabled = true\n'
        )
        config = write_config(tmp_path, head, fake_hydra)
        spec = f'ory_wsgi:make_app("{config}")'
        if request.param == "proxy":
            server = Gunicorn(spec, cwd=tmp_path, port=port)
            try:
                yield Mode("proxy", server.url, jwks(server.url), relays_headers=True)
            finally:
                server.stop()
            return
        server = Gunicorn(spec, cwd=tmp_path)
        gateway = Nginx(tmp_path, server.port, upstream.port, port)
        try:
            yield Mode("nginx", gateway.url, jwks(server.url), relays_headers=False)
        finally:
            gateway.stop()
            server.stop()
        return
    head = (
        f'[proxy]\npublic_url = "http://localhost"\nstate_dir = "{tmp_path}"\n'
        f'[ory]\nsdk_url = "{fake_ory.url}"\n'
    )
    config = write_config(tmp_path, head, fake_hydra)
    app = Flask(__name__)

    @app.route("/<path:anything>", methods=["GET", "POST"])
    def echo(anything: str) -> dict[str, Any]:
        return {"headers": dict(flask_request.headers)}

    app.wsgi_app = OryMiddleware(app.wsgi_app, load_settings(config, env={}))  # type: ignore[method-assign]
    client = app.test_client(use_cookies=False)
    keys = KeySet.import_key_set(client.get("/.ory/jwks.json").get_json())
    yield Mode("flask", "http://localhost", keys, relays_headers=True, flask=client)


def test_one_introspection_rule_decides_alike_in_every_mode(
    mode: Mode, fake_hydra: FakeHydra
) -> None:
    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    good = fake_hydra.issue("ada", scope=["photos"], audience=["api"])
    unscoped = fake_hydra.issue("ada", scope=["videos"], audience=["api"])
    elsewhere = fake_hydra.issue("ada", scope=["photos.read"], audience=["other"])
    revoked = fake_hydra.issue("ada", scope=["photos"], audience=["api"])
    fake_hydra.revoke(revoked)
    user = "ada" if mode.relays_headers else None
    nginx = mode.name == "nginx"
    cases: list[tuple[str, dict[str, str], Seen]] = [
        ("/api/photos", bearer(good), Seen(200, "ada", ["members"], user)),
        ("/api/photos", bearer(revoked), Seen(401)),
        ("/api/photos", bearer(unscoped), Seen(403)),
        ("/api/photos", bearer(elsewhere), Seen(403)),
        ("/api/photos", bearer("ory_at_" + "x" * 5000), Seen(401)),
        # Not this authenticator's: another prefix, the token in another header, none.
        ("/api/photos", bearer("eyJhbGciOiJub25lIn0.e30."), Seen(401)),
        ("/api/photos", {"X-Api-Token": good}, Seen(401)),
        ("/api/photos", {}, Seen(401)),
    ]
    for path, headers, expected in cases:
        assert mode.get(path, headers) == expected, (mode.name, path, headers)
    # One introspection per token: the cache answered the repeat of the good token.
    assert fake_hydra.calls(good) == 1
    assert fake_hydra.introspection_calls == 4
    fresh = fake_hydra.issue("bob", scope=["photos"], audience=["api"])
    fake_hydra.fail_introspection(503)
    assert mode.get("/api/photos", bearer(fresh)) == Seen(403 if nginx else 503)
    fake_hydra.fail_introspection(429, retry_after="7")
    assert mode.get("/api/photos", bearer(fresh)) == Seen(403 if nginx else 429)
    fake_hydra.fault = None
    assert mode.get("/api/photos", bearer(fresh)).status == 200
