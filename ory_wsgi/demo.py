"""`ory-wsgi demo`: the proxy, a sample app and the local Ory stand-in, all on loopback.

    with Demo(port=4000) as demo:      # three servers started; the key set in a temp dir
        demo.serve_forever()           # the proxy, until Ctrl-C; then everything is removed

The sample app is what a developer writes behind the proxy: it never sees a password, reads
who the user is from the JWT the proxy sends (checked against the proxy's JWKS), and shows
Log in / Sign up or Log out by that alone. The terminal shows one line per request (the
proxy's access log); nothing is left in the temporary directory after Ctrl-C.

The proxy decides by access rules (`demo_rules`): `/members` needs a session, `/admin`
also needs the permission `demo:admin#access` for the user, checked by the
`ory_permissions` authorizer against a local Keto stand-in that is seeded with one
relation tuple: the demo user has it, the guest user (same password) does not and gets 403.
"""

from __future__ import annotations

import html
import json
import signal
import sys
import tempfile
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import requests
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet as JoseKeySet
from werkzeug.serving import BaseWSGIServer, make_server

from ory_wsgi.app import build_app
from ory_wsgi.devserver import OwnDateAndServer, QuietRequestHandler
from ory_wsgi.settings import load_settings
from ory_wsgi.testing import FakeKratosServer, serve
from ory_wsgi.testing.keto import FakeKetoServer, serve_keto
from ory_wsgi.wsgi import StartResponse, WSGIEnvironment

DEMO_EMAIL = "demo@example.com"
DEMO_PASSWORD = "ory-wsgi-demo"  # noqa: S105 - the demo's published test login
GUEST_EMAIL = "guest@example.com"  # same password; logged in, but not allowed in /admin
# The relation tuple the /admin rule asks Keto about: namespace, object, relation (+ user).
ADMIN_PERMISSION = ("demo", "admin", "access")

FAVICON = (
    b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64">'
    b'<rect width="64" height="64" rx="14" fill="#3b5bdb"/>'
    b'<path d="M20 30v-6a12 12 0 0 1 24 0v6" stroke="#fff" stroke-width="6" fill="none"/>'
    b'<rect x="14" y="30" width="36" height="24" rx="5" fill="#fff"/></svg>'
)

STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#1d2330;
  background:#f5f6f8;line-height:1.5}
header{background:#1d2330;color:#fff}
header div{max-width:56rem;margin:0 auto;padding:.8rem 1rem;display:flex;gap:1.2rem;
  align-items:center;flex-wrap:wrap}
header a{color:#fff;text-decoration:none}header a:hover{text-decoration:underline}
.brand{font-weight:700;margin-right:auto}.who{color:#aab3c5}
.button{background:#3b5bdb;border-radius:6px;padding:.35rem .8rem}
main{max-width:56rem;margin:2rem auto;padding:0 1rem}
section{background:#fff;border:1px solid #e1e4ea;border-radius:10px;padding:1.2rem 1.5rem;
  margin-bottom:1.5rem;box-shadow:0 1px 3px rgba(0,0,0,.05)}
h1{font-size:1.6rem;margin:0 0 .6rem}h2{font-size:1.15rem;margin:0 0 .6rem}
.notice{background:#eef2ff;border:1px solid #c7d2fe;border-radius:8px;padding:.7rem 1rem}
.ok{color:#1b5e20;font-weight:600}.bad{color:#b00020;font-weight:600}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;vertical-align:top;padding:.35rem .6rem;border-bottom:1px solid #eef0f3}
th{white-space:nowrap;width:12rem;color:#5b6478;font-weight:600}
td,pre{overflow-wrap:anywhere;word-break:break-word}
pre{background:#f4f5f7;border-radius:8px;padding:1rem;white-space:pre-wrap;margin:0;
  font-size:.85rem}
code{font-size:.9em}
"""

LOGIN = "/.ory/self-service/login/browser"
SIGN_UP = "/.ory/self-service/registration/browser"
SETTINGS = "/.ory/self-service/settings/browser"
LOGOUT = "/.ory/proxy/logout"


def _e(value: Any) -> str:
    return html.escape(str(value))


class Visitor:
    """Who the request is from, as the app learns it: the proxy's JWT, verified, or nobody."""

    def __init__(self, claims: dict[str, Any] | None, problem: str = "") -> None:
        self.claims = claims
        self.problem = problem
        session = (claims or {}).get("session", {})
        self.session: dict[str, Any] = session if isinstance(session, dict) else {}
        identity = self.session.get("identity", {})
        self.identity: dict[str, Any] = identity if isinstance(identity, dict) else {}
        traits = self.identity.get("traits", {})
        self.email = str(traits.get("email", "")) if isinstance(traits, dict) else ""

    @property
    def signed_in(self) -> bool:
        return self.claims is not None


class SampleApp:
    """The app behind the proxy: a home page, a members area, and what the proxy sent it."""

    def __init__(self, jwks_url: str) -> None:
        self.jwks_url = jwks_url
        self.keys: JoseKeySet | None = None

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/favicon.ico":
            return self._answer(start_response, "200 OK", FAVICON, "image/svg+xml", cache=True)
        visitor = self.visitor(environ.get("HTTP_AUTHORIZATION", ""))
        if path == "/":
            status, title, body = "200 OK", "Home", self.home(visitor)
        elif path == "/members" or path.startswith("/members/"):
            status, title, body = "200 OK", "Members area", self.members(visitor, environ)
        elif path == "/admin" or path.startswith("/admin/"):
            status, title, body = "200 OK", "Admin area", self.admin(visitor)
        else:
            status, title = "404 Not Found", "Not found"
            body = '<section><h1>Not found</h1><p><a href="/">Back home</a></p></section>'
        page = self.layout(title, body, visitor).encode()
        return self._answer(start_response, status, page, "text/html; charset=utf-8")

    @staticmethod
    def _answer(
        start_response: StartResponse,
        status: str,
        body: bytes,
        content_type: str,
        cache: bool = False,
    ) -> Iterable[bytes]:
        start_response(
            status,
            [
                ("Content-Type", content_type),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "public, max-age=86400" if cache else "no-store"),
            ],
        )
        return [body]

    def visitor(self, authorization: str) -> Visitor:
        if not authorization.startswith("Bearer "):
            return Visitor(None)
        try:
            token = jwt.decode(authorization[7:], self._keys(), algorithms=["ES256"])
        except (JoseError, ValueError, requests.RequestException) as exc:
            return Visitor(None, f"The JWT did NOT verify: {exc}")
        return Visitor(dict(token.claims))

    def layout(self, title: str, body: str, visitor: Visitor) -> str:
        if visitor.signed_in:
            account = (
                f'<span class=who>{_e(visitor.email)}</span><a href="{SETTINGS}">Settings</a>'
                f'<a class=button href="{LOGOUT}">Log out</a>'
            )
        else:
            account = f'<a href="{LOGIN}">Log in</a><a class=button href="{SIGN_UP}">Sign up</a>'
        return (
            "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
            f"<title>{_e(title)} · ory_wsgi demo</title>"
            '<meta name=viewport content="width=device-width, initial-scale=1">'
            '<link rel=icon href="/favicon.ico" type="image/svg+xml">'
            f"<style>{STYLE}</style></head>\n<body><header><div>"
            '<a class=brand href="/">ory_wsgi demo</a><a href="/">Home</a>'
            '<a href="/members">Members area</a><a href="/admin">Admin area</a>'
            f"{account}</div></header>\n"
            f"<main>{body}</main></body></html>\n"
        )

    def home(self, visitor: Visitor) -> str:
        if visitor.signed_in:
            state = (
                f"<p class=ok>You are logged in as {_e(visitor.email)}.</p>"
                '<p><a href="/members">Open the members area</a> to see what the app knows'
                " about you.</p>"
            )
        else:
            state = (
                "<p>Right now you are not logged in. The members area is protected: opening"
                " it takes you to the login page first.</p>"
                f"<p class=notice>Demo account: <strong>{_e(DEMO_EMAIL)}</strong>, password"
                f" <strong>{_e(DEMO_PASSWORD)}</strong>, or "
                f'<a href="{SIGN_UP}">sign up</a> with any email address.</p>'
            )
        problem = f"<p class=bad>{_e(visitor.problem)}</p>" if visitor.problem else ""
        namespace, obj, relation = ADMIN_PERMISSION
        return (
            "<section><h1>A sample app behind ory_wsgi</h1>"
            "<p>This app never sees a password. Ory (here a local stand-in) signs users in on"
            " this same domain, under <code>/.ory/</code>; the proxy checks the session on"
            " every request and hands the app a signed JWT saying who the user is.</p>"
            f"{problem}{state}</section>"
            "<section><h2>Permissions: the admin area</h2>"
            '<p><a href="/admin">The admin area</a> needs more than a login: the proxy asks'
            " Ory Permissions (Keto, here a local stand-in) whether the user has"
            f" <code>{_e(namespace)}:{_e(obj)}#{_e(relation)}</code>, and only then lets the"
            f" request through. Log in as <strong>{_e(DEMO_EMAIL)}</strong> to get in; log"
            f" in as <strong>{_e(GUEST_EMAIL)}</strong> (same password) to be refused with"
            " 403.</p></section>"
        )

    def admin(self, visitor: Visitor) -> str:
        # The proxy lets a request in here only when Keto allowed it (the /admin rule).
        namespace, obj, relation = ADMIN_PERMISSION
        subject = (visitor.claims or {}).get("sub", "")
        return (
            "<section><h1>Admin area</h1>"
            f"<p class=ok>Welcome, {_e(visitor.email)}: Keto allowed"
            f" <code>{_e(namespace)}:{_e(obj)}#{_e(relation)}@{_e(subject)}</code>.</p>"
            f"<p>{_e(GUEST_EMAIL)} is logged in just as well, but has no such relation"
            " tuple: the proxy answers it 403 and this app never sees the request.</p>"
            "</section>"
        )

    def members(self, visitor: Visitor, environ: WSGIEnvironment) -> str:
        if not visitor.signed_in:
            # The proxy never lets an anonymous request through to /members; say so if it did.
            detail = _e(visitor.problem or "No Authorization header reached the app.")
            return f"<section><h1>Members area</h1><p class=bad>{detail}</p></section>"
        session, identity = visitor.session, visitor.identity
        rows = [
            ("Email", visitor.email),
            ("Identity ID", identity.get("id", "")),
            ("Signed in", _when(session.get("authenticated_at"))),
            ("Assurance level", session.get("authenticator_assurance_level", "")),
            ("Session ends", _when(session.get("expires_at"))),
            ("Token expires", _when((visitor.claims or {}).get("exp"))),
        ]
        who = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
        headers = []
        for key in sorted(environ):
            if key.startswith("HTTP_"):
                value = str(environ[key])
                if key == "HTTP_AUTHORIZATION":
                    value = value[:48] + "…"
                elif key == "HTTP_COOKIE":  # names only: the values are credentials
                    names = (part.split("=", 1)[0].strip() for part in value.split(";"))
                    value = ", ".join(names) + " (values hidden)"
                headers.append((key[5:].replace("_", "-").title(), value))
        received = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in headers)
        claims = json.dumps(visitor.claims, indent=2, ensure_ascii=False)
        return (
            "<section><h1>Members area</h1>"
            f"<p class=ok>Logged in as {_e(visitor.email)}: the JWT verified against the"
            " proxy's JWKS.</p>"
            f"<table>{who}</table></section>"
            "<section><h2>The JWT's claims</h2>"
            "<p>Sent by the proxy as <code>Authorization: Bearer …</code>, signed with the key"
            ' published at <a href="/.ory/jwks.json">/.ory/jwks.json</a>.</p>'
            f"<pre>{_e(claims)}</pre></section>"
            "<section><h2>What the app received</h2>"
            f"<p><code>{_e(environ['REQUEST_METHOD'])} {_e(environ.get('RAW_URI') or '')}</code>"
            f"</p><table>{received}</table></section>"
        )

    def _keys(self) -> JoseKeySet:
        if self.keys is None:
            document = requests.get(self.jwks_url, timeout=5).json()
            self.keys = JoseKeySet.import_key_set(document)
        return self.keys


def _when(value: Any) -> str:
    """An RFC 3339 string or epoch seconds, as a short UTC time."""
    moment: datetime | None = None
    if isinstance(value, int | float):
        moment = datetime.fromtimestamp(value, UTC)
    elif isinstance(value, str) and value:
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else ""


class Demo:
    """The stand-in, the sample app and the proxy (werkzeug, threaded) on loopback.

    `public_url` is where the browser reaches the proxy (default `http://localhost:<port>`).
    The proxy's key set lives in a temporary directory, removed by `close()`.
    """

    def __init__(
        self, port: int = 4000, host: str = "127.0.0.1", public_url: str | None = None
    ) -> None:
        self.public_url = (public_url or f"http://localhost:{port}").rstrip("/")
        self._state = tempfile.TemporaryDirectory(prefix="ory-wsgi-demo-")
        self._servers: list[BaseWSGIServer] = []
        self._background: threading.Thread | None = None
        self.ory: FakeKratosServer | None = None
        self.keto: FakeKetoServer | None = None
        try:
            self._start(port, host)
        except BaseException:
            self.close()
            raise

    def _start(self, port: int, host: str) -> None:
        self.ory = serve(
            host,
            0,
            allowed_return_urls=[self.public_url],
            default_return_url=self.public_url + "/",
            login_hint=f"Demo account: {DEMO_EMAIL} / {DEMO_PASSWORD}",
        )
        demo_user = self.ory.kratos.add_identity(DEMO_EMAIL, DEMO_PASSWORD)
        self.ory.kratos.add_identity(GUEST_EMAIL, DEMO_PASSWORD)
        self.keto = serve_keto(host, 0)
        self.keto.keto.add(*ADMIN_PERMISSION, subject_id=demo_user["id"])
        sample = SampleApp(f"http://{host}:{port}/.ory/jwks.json")
        app_server = make_server(
            host, 0, sample, threaded=True, request_handler=QuietRequestHandler
        )
        self._servers.append(app_server)
        threading.Thread(target=app_server.serve_forever, daemon=True).start()
        self.app_url = f"http://{host}:{app_server.server_port}"
        settings = load_settings(
            None,
            env={},
            overrides={
                "proxy": {
                    "upstream": self.app_url,
                    "public_url": self.public_url,
                    "state_dir": self._state.name,
                },
                "server": {"host": host, "port": port},
                "ory": {"sdk_url": self.ory.url},
                "log": {"format": "text"},
                **demo_rules(self.public_url, self.keto.url),
            },
        )
        self.proxy = make_server(
            host,
            port,
            OwnDateAndServer(build_app(settings)),
            threaded=True,
            request_handler=QuietRequestHandler,
        )
        self._servers.append(self.proxy)

    @property
    def state_dir(self) -> str:
        """The temporary directory of the proxy's key set; gone after `close()`."""
        return self._state.name

    def serve_forever(self) -> None:
        """Serve the proxy in this thread until Ctrl-C (or `close()` from another thread)."""
        self.proxy.serve_forever()

    def serve_in_background(self) -> None:
        """Serve the proxy in a thread of its own (tests, screenshots); `close()` ends it."""
        self._background = threading.Thread(target=self.proxy.serve_forever, daemon=True)
        self._background.start()

    def close(self) -> None:
        """Stop every server and remove the temporary directory (the key set with it)."""
        if self._background is not None:
            self.proxy.shutdown()
            self._background = None
        for server in self._servers:
            if server is not getattr(self, "proxy", None):
                server.shutdown()
            server.server_close()
        self._servers.clear()
        if self.ory is not None:
            self.ory.stop()
            self.ory = None
        if self.keto is not None:
            self.keto.stop()
            self.keto = None
        self._state.cleanup()

    def __enter__(self) -> Demo:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def demo_rules(public_url: str, keto_url: str) -> dict[str, Any]:
    """The demo's access rules and the handlers they use, as settings (TOML key names).

    `/admin` and `/members` need a session (a browser without one is sent to log in,
    anything else gets 401); `/admin` also needs Keto to allow `ADMIN_PERMISSION` for
    the user (403 otherwise); every other path is open, with the user's JWT when there
    is a session.
    """
    namespace, obj, relation = ADMIN_PERMISSION
    # Any host and port: the demo is reached as localhost and as 127.0.0.1.
    site = "<https?>://<[^/]+>"
    session = [{"handler": "cookie_session"}, {"handler": "bearer_token"}]
    optional = [{"handler": h["handler"], "config": {"optional": True}} for h in session]
    token = [{"handler": "id_token", "config": {"only_with_session": True}}]
    errors = [
        {
            "handler": "redirect",
            "config": {
                "to": f"{public_url}{LOGIN}",
                "code": 303,
                "return_to_query_param": "return_to",
                "when": [
                    {"error": ["unauthorized"], "request": {"header": {"accept": ["text/html"]}}}
                ],
            },
        },
        {"handler": "json"},
    ]
    methods = ["GET", "HEAD", "POST"]
    permission = {
        "url": keto_url,
        "namespace": namespace,
        "object": obj,
        "relation": relation,
        "subject_id": "{{ print .Subject }}",
        "cache": {"ttl": "1s"},
    }
    rules = [
        {
            "id": "admin",
            "match": {"url": f"{site}/admin<(/.*)?>", "methods": methods},
            "authenticators": session,
            "authorizer": {"handler": "ory_permissions", "config": permission},
            "mutators": token,
            "errors": errors,
        },
        {
            "id": "members",
            "match": {"url": f"{site}/members<(/.*)?>", "methods": methods},
            "authenticators": session,
            "authorizer": {"handler": "allow"},
            "mutators": token,
            "errors": errors,
        },
        {
            "id": "site",
            "match": {
                "url": f"{site}/<.*>",
                "methods": [*methods, "PUT", "PATCH", "DELETE", "OPTIONS"],
            },
            "authenticators": [*optional, {"handler": "noop"}],
            "authorizer": {"handler": "allow"},
            "mutators": token,
        },
    ]
    enabled = {"enabled": True}
    return {
        "rule": rules,
        "authenticators": {"cookie_session": enabled, "bearer_token": enabled, "noop": enabled},
        "authorizers": {"allow": enabled, "ory_permissions": enabled},
        "mutators": {"id_token": enabled},
        "errors": {"handlers": {"redirect": enabled, "json": enabled}},
    }


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run_demo(port: int = 4000, host: str = "127.0.0.1") -> int:
    """Start Ory's stand-in, the sample app and the proxy on `port`; serve until Ctrl-C."""
    # `kill` (SIGTERM) stops the demo as cleanly as Ctrl-C: the temporary directory goes too.
    signal.signal(signal.SIGTERM, _interrupt)
    # A busy port: werkzeug says so and exits (SystemExit); Demo removes its directory first.
    with Demo(port, host) as demo:
        assert demo.ory is not None
        print(
            f"ory-wsgi demo\n"
            f"  Ory stand-in: {demo.ory.url}\n"
            f"  Keto stand-in: {demo.keto.url if demo.keto else ''}\n"
            f"  sample app:   {demo.app_url}\n"
            f"  open:         {demo.public_url}/   (log in as {DEMO_EMAIL} / {DEMO_PASSWORD})\n"
            f"  admin area:   {demo.public_url}/admin   ({GUEST_EMAIL}, same password: 403)\n"
            "Press Ctrl-C to stop.",
            file=sys.stderr,
            flush=True,
        )
        demo.serve_forever()  # werkzeug's loop ends quietly on Ctrl-C
    print("\nStopped; the demo's temporary files are removed.", file=sys.stderr)
    return 0
