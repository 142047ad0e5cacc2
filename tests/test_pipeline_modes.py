"""One Oathkeeper rule file, three modes, the same decisions (issue 11's "done means").

The rule file (JSON, Oathkeeper's format, loaded unchanged) uses
cookie_session/bearer_token/anonymous, allow/deny, id_token/header and
json/redirect error handlers. It is served by the proxy under gunicorn, by
nginx `auth_request` asking the decisions endpoint, and by a Flask app with
the embedded middleware in-process; each case expects the same status, the
same JWT subject and the same login redirect in all three. nginx passes on
only `Authorization` (docs/deploy.md), so the `header` mutator's `X-User`
is checked where the mode delivers it; a request no rule matches is 404,
and 403 through the decisions endpoint (SPEC §16: nginx takes no 404).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from flask import Flask
from flask import request as flask_request
from gateways import Nginx, find_binary
from joserfc import jwt
from joserfc.jwk import KeySet
from ory_flows import PASSWORD
from servers import Gunicorn, ThreadedServer, free_port

from ory_wsgi.app import make_app
from ory_wsgi.errors import ConfigError
from ory_wsgi.middleware import OryMiddleware
from ory_wsgi.settings import load_settings
from ory_wsgi.testing import FakeKratos

HOST = "<[^/]+>"
LOGIN = "/.ory/self-service/login/browser"


def rules(public: str) -> list[dict[str, Any]]:
    login = f"{public}{LOGIN}"
    errors = [
        {
            "handler": "redirect",
            "config": {
                "to": login,
                "code": 303,
                "return_to_query_param": "return_to",
                "when": [
                    {"error": ["unauthorized"], "request": {"header": {"accept": ["text/html"]}}}
                ],
            },
        },
        {"handler": "json"},
    ]
    return [
        {
            "id": "members",
            "match": {"methods": ["GET", "POST"], "url": f"<https?>://{HOST}/members/<.*>"},
            "authenticators": [{"handler": "cookie_session"}, {"handler": "bearer_token"}],
            "authorizer": {"handler": "allow"},
            "mutators": [
                {"handler": "id_token", "config": {"claims": '{"aud": ["members"]}'}},
                {"handler": "header", "config": {"headers": {"X-User": "{{ print .Subject }}"}}},
            ],
            "errors": errors,
        },
        {
            "id": "admin",
            "match": {"methods": ["GET"], "url": f"<https?>://{HOST}/admin<.*>"},
            "authenticators": [{"handler": "cookie_session"}],
            "authorizer": {"handler": "deny"},
            "mutators": [{"handler": "noop"}],
            "errors": errors,
        },
        {
            "id": "open",
            "match": {"methods": ["GET"], "url": f"<https?>://{HOST}/open<.*>"},
            "authenticators": [{"handler": "anonymous"}],
            "authorizer": {"handler": "allow"},
            "mutators": [{"handler": "noop"}],
        },
    ]


ENABLED = """
[access_rules]
repositories = ["{rules}"]
[authenticators.cookie_session]
enabled = true
[authenticators.bearer_token]
enabled = true
[authenticators.anonymous]
enabled = true
[authorizers.allow]
enabled = true
[authorizers.deny]
enabled = true
[mutators.id_token]
enabled = true
[mutators.header]
enabled = true
[mutators.noop]
enabled = true
[errors.handlers.json]
enabled = true
[errors.handlers.redirect]
enabled = true
"""


@dataclass
class Seen:
    """What one request came to, in any mode."""

    status: int
    subject: str = ""  # the JWT's sub the app received
    audience: Any = None
    user: str | None = None  # X-User, where the mode delivers it
    login: str = ""  # the login redirect's path and return_to path


@dataclass
class Mode:
    name: str
    url: str
    keys: KeySet
    relays_headers: bool
    flask: Any = None
    decisions: str = ""  # the decisions endpoint's server, behind a gateway

    def send(
        self, method: str, path: str, headers: dict[str, str], data: bytes = b""
    ) -> tuple[int, bytes, dict[str, str]]:
        """Status, body and headers of one request in this mode."""
        if self.flask is not None:
            answer = self.flask.open(path, method=method, headers=headers, data=data)
            return answer.status_code, answer.get_data(), dict(answer.headers)
        got = requests.request(
            method,
            self.url + path,
            headers=headers,
            data=data or None,
            allow_redirects=False,
            timeout=10,
        )
        return got.status_code, got.content, dict(got.headers)

    def get(self, path: str, headers: dict[str, str]) -> Seen:
        status, body, answered = self.send("GET", path, headers)
        location = answered.get("Location", "")
        seen = Seen(status)
        if location:
            parts = urlsplit(location)
            return_to = urlsplit(parse_qs(parts.query)["return_to"][0])
            seen.login = f"{parts.path} -> {return_to.path}"
        if status == 200:
            echoed = json.loads(body)["headers"]
            bearer = echoed.get("Authorization", "")
            if bearer:
                claims = jwt.decode(
                    bearer.removeprefix("Bearer "), self.keys, algorithms=["ES256"]
                ).claims
                seen.subject, seen.audience = claims["sub"], claims.get("aud")
            seen.user = echoed.get("X-User") if self.relays_headers else None
        return seen


def write_rules(tmp_path: Path, public: str) -> Path:
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(rules(public)))
    return path


RulesWriter = Callable[[Path, str], Path]  # (directory, public URL) -> the rule file


def proxy_config(
    tmp_path: Path,
    public: str,
    upstream: str,
    ory_url: str,
    writer: RulesWriter = write_rules,
    enabled: str = ENABLED,
) -> str:
    return (
        f'[proxy]\nupstream = "{upstream}"\npublic_url = "{public}"\n'
        'trusted_proxies = ["127.0.0.1/32"]\n'
        f'[ory]\nsdk_url = "{ory_url}"\n[decisions]\nenabled = true\n'
        + enabled.format(rules=writer(tmp_path, public))
    )


def jwks(url: str) -> KeySet:
    return KeySet.import_key_set(requests.get(f"{url}/.ory/jwks.json", timeout=5).json())


@contextmanager
def serving(
    name: str,
    tmp_path: Path,
    upstream: ThreadedServer,
    ory_url: str,
    writer: RulesWriter = write_rules,
    enabled: str = ENABLED,
) -> Iterator[Mode]:
    """One rule file served in mode `name`: "proxy", "nginx" (decisions endpoint) or "flask"."""
    if name == "proxy":
        port = free_port()
        public = f"http://127.0.0.1:{port}"
        config = tmp_path / "ory.toml"
        config.write_text(proxy_config(tmp_path, public, upstream.url, ory_url, writer, enabled))
        server = Gunicorn(f'ory_wsgi:make_app("{config}")', cwd=tmp_path, port=port)
        try:
            yield Mode("proxy", server.url, jwks(server.url), relays_headers=True)
        finally:
            server.stop()
    elif name == "nginx":
        if find_binary(Nginx.binary_name) is None:
            if os.environ.get("CI"):
                raise RuntimeError("nginx is required in CI (.ci/run installs it)")
            pytest.skip(f"nginx is not installed (apt-get install {Nginx.package})")
        port = free_port()
        public = f"http://127.0.0.1:{port}"
        config = tmp_path / "ory.toml"
        config.write_text(proxy_config(tmp_path, public, upstream.url, ory_url, writer, enabled))
        server = Gunicorn(f'ory_wsgi:make_app("{config}")', cwd=tmp_path)
        gateway = Nginx(tmp_path, server.port, upstream.port, port)
        try:
            yield Mode(
                "nginx", gateway.url, jwks(server.url), relays_headers=False, decisions=server.url
            )
        finally:
            gateway.stop()
            server.stop()
    else:
        public = "http://localhost"
        config = tmp_path / "ory.toml"
        config.write_text(
            f'[proxy]\npublic_url = "{public}"\nstate_dir = "{tmp_path}"\n'
            f'[ory]\nsdk_url = "{ory_url}"\n' + enabled.format(rules=writer(tmp_path, public))
        )
        app = Flask(__name__)

        @app.route("/<path:anything>", methods=["GET", "POST"])
        def echo(anything: str) -> dict[str, Any]:
            body = flask_request.get_data()
            return {
                "headers": dict(flask_request.headers),
                "size": len(body),
                "sha256": hashlib.sha256(body).hexdigest(),
            }

        app.wsgi_app = OryMiddleware(app.wsgi_app, load_settings(config, env={}))  # type: ignore[method-assign]
        client = app.test_client(use_cookies=False)
        keys = KeySet.import_key_set(client.get("/.ory/jwks.json").get_json())
        yield Mode("flask", public, keys, relays_headers=True, flask=client)


@pytest.fixture(params=["proxy", "nginx", "flask"])
def mode(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    upstream: ThreadedServer,
    fake_ory: FakeKratos,
) -> Iterator[Mode]:
    with serving(request.param, tmp_path, upstream, fake_ory.url) as served:
        yield served


def session(fake_ory: FakeKratos) -> tuple[str, dict[str, str]]:
    identity = fake_ory.add_identity("ada@example.com", PASSWORD)
    _, token = fake_ory.create_session(identity["id"])
    cookie = "; ".join(f"{k}={v}" for k, v in fake_ory.cookies(token).items())
    return str(identity["id"]), {"Cookie": cookie, "X-Token": token}


def test_one_rule_file_decides_alike_in_every_mode(mode: Mode, fake_ory: FakeKratos) -> None:
    subject, credentials = session(fake_ory)
    cookie = {"Cookie": credentials["Cookie"]}
    bearer = {"Authorization": "Bearer " + credentials["X-Token"]}
    user = subject if mode.relays_headers else None
    html = {"Accept": "text/html"}
    cases: list[tuple[str, dict[str, str], Seen]] = [
        ("/members/page", cookie, Seen(200, subject, ["members"], user)),
        ("/members/page", bearer, Seen(200, subject, ["members"], user)),
        ("/members/page?x=1", html, Seen(303, login=f"{LOGIN} -> /members/page")),
        ("/members/page", {"Accept": "application/json"}, Seen(401)),
        ("/admin/x", cookie, Seen(403)),
        ("/open/x", {}, Seen(200)),
        ("/open/x", bearer, Seen(401)),
        ("/nowhere", cookie, Seen(403 if mode.name == "nginx" else 404)),
    ]
    for path, headers, expected in cases:
        assert mode.get(path, headers) == expected, (mode.name, path, headers)


def test_access_rules_without_ory_are_refused_at_start(tmp_path: Path) -> None:
    rules_file = write_rules(tmp_path, "http://127.0.0.1")
    config = tmp_path / "ory.toml"
    config.write_text(
        '[proxy]\nupstream = "http://127.0.0.1:9"\n'
        f'[access_rules]\nrepositories = ["{rules_file}"]\n'
    )
    with pytest.raises(ConfigError, match="access rules needs Ory"):
        make_app(str(config))
