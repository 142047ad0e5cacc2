"""`ory-wsgi demo`: the proxy, a sample app and the local Ory stand-in, all on loopback."""

from __future__ import annotations

import html
import json
import sys
import tempfile
import threading
from collections.abc import Iterable
from typing import Any

import requests
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet as JoseKeySet
from werkzeug.serving import make_server

from ory_wsgi.app import build_app
from ory_wsgi.settings import load_settings
from ory_wsgi.testing import serve
from ory_wsgi.wsgi import StartResponse, WSGIEnvironment

DEMO_EMAIL = "demo@example.com"
DEMO_PASSWORD = "ory-wsgi-demo"  # noqa: S105 - the demo's published test login

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>ory_wsgi demo app</title>
<style>body{{font-family:system-ui,sans-serif;max-width:48rem;margin:2rem auto;padding:0 1rem}}
pre{{background:#f4f4f4;padding:1rem;overflow:auto}} nav a{{margin-right:1rem}}</style></head>
<body><h1>The sample app behind ory_wsgi</h1>
<nav><a href="/">Home</a><a href="/members">Members area (protected)</a>
<a href="/.ory/self-service/login/browser">Log in</a>
<a href="/.ory/self-service/registration/browser">Sign up</a>
<a href="/.ory/proxy/logout">Log out</a></nav>
<p>{status}</p>
<h2>What the app received</h2>
<pre>{request}</pre>
</body></html>
"""


class SampleApp:
    """A page that shows what the proxy sent, and checks the JWT against the proxy's JWKS."""

    def __init__(self, jwks_url: str) -> None:
        self.jwks_url = jwks_url
        self.keys: JoseKeySet | None = None

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        lines = [f"{environ['REQUEST_METHOD']} {environ.get('RAW_URI') or environ['PATH_INFO']}"]
        for key in sorted(environ):
            if key.startswith("HTTP_"):
                value = environ[key]
                if key == "HTTP_AUTHORIZATION":
                    value = value[:40] + "…"
                lines.append(f"{key[5:].replace('_', '-').title()}: {value}")
        status = self.describe(environ.get("HTTP_AUTHORIZATION", ""), lines)
        where = "the members area" if environ["PATH_INFO"].startswith("/members") else "a page"
        body = PAGE.format(
            status=f"You are on {where}. {status}", request=html.escape("\n".join(lines))
        ).encode()
        start_response(
            "200 OK",
            [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body)))],
        )
        return [body]

    def describe(self, authorization: str, lines: list[str]) -> str:
        if not authorization.startswith("Bearer "):
            return html.escape(
                f"No Authorization header: you are not logged in. "
                f"Log in as {DEMO_EMAIL} / {DEMO_PASSWORD}, or sign up."
            )
        try:
            token = jwt.decode(authorization[7:], self._keys(), algorithms=["ES256"])
        except (JoseError, ValueError, requests.RequestException) as exc:
            return html.escape(f"The JWT did NOT verify: {exc}")
        claims: dict[str, Any] = dict(token.claims)
        lines += ["", "Verified JWT claims:", json.dumps(claims, indent=2)]
        email = claims.get("session", {}).get("identity", {}).get("traits", {}).get("email")
        return html.escape(f"Logged in as {email}: the JWT verified against the proxy's JWKS.")

    def _keys(self) -> JoseKeySet:
        if self.keys is None:
            document = requests.get(self.jwks_url, timeout=5).json()
            self.keys = JoseKeySet.import_key_set(document)
        return self.keys


def run_demo(port: int = 4000, host: str = "127.0.0.1") -> int:
    """Start Ory's stand-in, the sample app and the proxy on `port`; serve until Ctrl-C."""
    public_url = f"http://localhost:{port}"
    ory = serve(host, 0, allowed_return_urls=[public_url], default_return_url=public_url + "/")
    ory.kratos.add_identity(DEMO_EMAIL, DEMO_PASSWORD)
    sample = SampleApp(f"http://{host}:{port}/.ory/jwks.json")
    app_server = make_server(host, 0, sample, threaded=True)
    threading.Thread(target=app_server.serve_forever, daemon=True).start()
    upstream = f"http://{host}:{app_server.server_port}"
    settings = load_settings(
        None,
        env={},
        overrides={
            "proxy": {
                "upstream": upstream,
                "public_url": public_url,
                "state_dir": tempfile.mkdtemp(prefix="ory-wsgi-demo-"),
            },
            "server": {"host": host, "port": port},
            "ory": {"sdk_url": ory.url},
            "log": {"format": "text"},
            "protect": [{"prefix": "/members"}],
        },
    )
    proxy = make_server(host, port, build_app(settings), threaded=True)
    print(
        f"ory-wsgi demo\n"
        f"  Ory stand-in: {ory.url}\n"
        f"  sample app:   {upstream}\n"
        f"  open:         {public_url}/   (log in as {DEMO_EMAIL} / {DEMO_PASSWORD})\n"
        "Press Ctrl-C to stop.",
        file=sys.stderr,
        flush=True,
    )
    try:
        proxy.serve_forever()
    finally:
        proxy.server_close()
        app_server.shutdown()
        ory.stop()
    return 0
