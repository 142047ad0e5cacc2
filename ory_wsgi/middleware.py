"""Ory in-process: the proxy's session lookup, protection and JWT layers around any WSGI app.

    app = OryMiddleware(app, "ory.toml")            # or OryMiddleware(app, sdk_url=..., ...)

The application sees `environ["ory.session"]` and `environ["ory.identity"]`.
Flask (`ory_wsgi.flask`) and Django (`ory_wsgi.django`) build on this module.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Collection, Iterable, Mapping
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from ory_wsgi.answers import error_answer, wants_html
from ory_wsgi.errors import ConfigError
from ory_wsgi.headers import TrustedProxies
from ory_wsgi.identity_headers import IDENTITY_KEYS, IDENTITY_PREFIXES, environ_keys, strip_claims
from ory_wsgi.layers import ory_forwarder_for, ory_layers
from ory_wsgi.paths import EMBEDDED_KEY
from ory_wsgi.settings import SECTIONS, Settings, load_settings
from ory_wsgi.wrappers.cors import Cors
from ory_wsgi.wrappers.namespace import ProxyNamespace
from ory_wsgi.wrappers.ory_route import OryRoute
from ory_wsgi.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

# Client headers that claim an identity: one list with the proxy's (identity_headers).
SPOOFABLE_KEYS = IDENTITY_KEYS
SPOOFABLE_PREFIXES = IDENTITY_PREFIXES

# EMBEDDED_KEY is set in environ by OryMiddleware: paths are judged after
# SCRIPT_NAME, and an inner Django middleware does not look twice.
PASSED_KEY = "ory.passed"
LOGIN_PATH = "/.ory/proxy/login"
# Names in a framework's ORY_* config that are not TOML keys.
CONFIG_ALIASES = {"project_api_key": "api_key"}


def load_embedded_settings(
    config: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Settings as `load_settings` reads them, with the embedded default: JWT off.

    Minting a JWT for an in-process app is only useful to hand it on; it is on
    only when `[jwt] enabled` is set in the file, the environment or overrides.
    """
    env = os.environ if env is None else env
    settings = load_settings(config, env, overrides)
    if settings.jwt.enabled and not _jwt_named(config, env, overrides or {}):
        settings = dataclasses.replace(
            settings, jwt=dataclasses.replace(settings.jwt, enabled=False)
        )
    return settings


def _jwt_named(
    config: str | os.PathLike[str] | None, env: Mapping[str, str], overrides: Mapping[str, Any]
) -> bool:
    jwt = overrides.get("jwt")
    if isinstance(jwt, Mapping) and "enabled" in jwt:
        return True
    if "ORY_WSGI_JWT_ENABLED" in env:
        return True
    if config is None:
        return False
    # load_settings has read and checked this file already.
    with open(config, "rb") as handle:
        section = tomllib.load(handle).get("jwt", {})
    return isinstance(section, dict) and "enabled" in section


def settings_from_config(
    config: Mapping[str, Any],
    prefix: str = "ORY_",
    ignore: Collection[str] = (),
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Embedded settings from a framework's config (`app.config`, Django settings).

    `ORY_CONFIG` names a TOML file; every other `ORY_<KEY>` is a TOML key name
    (`ORY_SDK_URL`, `ORY_PUBLIC_URL`, `ORY_PROTECT`), a section as a dict
    (`ORY_JWT = {"enabled": True}`) or a section and key (`ORY_JWT_ENABLED`,
    `ORY_SESSION_CACHE_TTL`). They win over the file and the environment.
    Keys in `ignore` belong to the framework glue and are skipped.
    """
    path: str | None = None
    overrides: dict[str, Any] = {}
    for name, value in config.items():
        if not name.startswith(prefix) or name in ignore:
            continue
        key = name[len(prefix) :].lower()
        if key == "config":
            path = value
            continue
        key = CONFIG_ALIASES.get(key, key)
        section, _, rest = _split_section(key)
        if section:
            overrides.setdefault(section, {})[rest] = value
        elif key in SECTIONS and isinstance(value, Mapping):
            overrides.setdefault(key, {}).update(value)
        else:
            overrides[key] = value
    return load_embedded_settings(path, env=env, overrides=overrides)


def _split_section(key: str) -> tuple[str, str, str]:
    """`jwt_enabled` -> ("jwt", "_", "enabled"); a plain key -> ("", "", "")."""
    for section, cls in SECTIONS.items():
        if key.startswith(section + "_"):
            rest = key[len(section) + 1 :]
            if rest in {f.name for f in dataclasses.fields(cls)}:
                return section, "_", rest
    return "", "", ""


def embedded_public_url(settings: Settings) -> str:
    """The app's public URL: login `return_to` URLs are built from it, never from Host."""
    if not settings.proxy.public_url:
        raise ConfigError(
            "[proxy] public_url is not set: the app's own URL, e.g. "
            '"https://app.example.com" (ORY_PUBLIC_URL in Flask or Django settings)'
        )
    return settings.proxy.public_url.rstrip("/")


class OryMiddleware:
    """Ory's session, `[[protect]]` rules and (optionally) a JWT for an in-process WSGI app.

        app.wsgi_app = OryMiddleware(app.wsgi_app, "ory.toml")
        app.wsgi_app = OryMiddleware(app.wsgi_app, sdk_url="https://x.projects.oryapis.com",
                                     public_url="https://app.example.com")

    `settings` is a `Settings` (taken as it is), a TOML file, or None
    (environment and `overrides` only; TOML key names). `[proxy] upstream` is
    not used; `[proxy] public_url` is required. Layers, outermost first:

    1. client headers that claim an identity are removed (`SPOOFABLE_KEYS`,
       `X-Ory-*`, `Ory-*`, and `strip_headers`);
    2. `/.ory/proxy/login`, `/.ory/proxy/logout` (and the JWKS with JWT on);
    3. CORS preflights, answered from `[cors]` as the proxy answers them
       (never by the app: a preflight carries no session);
    4. `/.ory/*` forwarded to Ory (unless `forward_ory=False`);
    5. the session lookup, `[[protect]]`, session → JWT, as in the proxy.

    The app then gets `ory.session`, `ory.identity`, `ory.error`,
    `ory.aal_required` in `environ`; no client `Authorization` (the JWT
    instead, when on); and, with `[[protect]]` rules, `PATH_INFO` set to the
    normalised path that was checked. Rules and `/.ory` are relative to the
    app's mount point: the path judged is the raw request target minus
    `SCRIPT_NAME` (400 when the target is not under it).
    """

    def __init__(
        self,
        app: WSGIApplication,
        settings: Settings | str | os.PathLike[str] | None = None,
        /,
        *,
        forward_ory: bool = True,
        strip_headers: Iterable[str] = (),
        **overrides: Any,
    ) -> None:
        if not isinstance(settings, Settings):
            settings = load_embedded_settings(settings, overrides=overrides)
        elif overrides:
            raise TypeError("pass overrides or a Settings, not both")
        self.settings = settings
        self.app = app
        ory_url = settings.ory_url
        if not ory_url:
            raise ConfigError(
                "[ory] sdk_url or project is not set: the middleware needs Ory "
                "(ORY_SDK_URL, ORY_PROJECT)"
            )
        public = embedded_public_url(settings)
        self.public_url = public
        handoff = AppHandoff(app)
        around, routes = ory_layers(settings, public)
        inner = around(handoff)
        routes[LOGIN_PATH] = LoginEndpoint(public)
        forwarder = None
        if forward_ory:
            forwarder = ory_forwarder_for(settings, public)
            inner = OryRoute(inner, forwarder, urlsplit(ory_url).path)
        self.forwarder = forwarder
        self.stack: WSGIApplication = SpoofGuard(
            ProxyNamespace(PreflightAnswer(inner, settings, public), routes),
            frozenset(k.upper() for k in strip_headers),
            settings.proxy.trusted_proxies,
        )

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        return self.stack(environ, start_response)


class SpoofGuard:
    """Removes client headers that claim an identity, before anything reads the request."""

    def __init__(
        self,
        app: WSGIApplication,
        extra_keys: frozenset[str] = frozenset(),
        trusted_proxies: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.keys = environ_keys(extra_keys)
        self.trusted = TrustedProxies(trusted_proxies)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        trusted_peer = environ.get("REMOTE_ADDR", "") in self.trusted
        strip_claims(environ, trusted_peer=trusted_peer, extra_keys=self.keys)
        environ[EMBEDDED_KEY] = True
        return self.app(environ, start_response)


class PreflightAnswer:
    """CORS preflights are answered here from `[cors]` (§9, §10): they never reach the app.

    A preflight is anonymous by definition; handed to the app, it would run a
    protected view without a session. The answer is the proxy's own (`Cors`):
    204 for an allowed origin, 403 for any other. Other requests pass, and the
    app's own CORS headers on them are left alone.
    """

    def __init__(self, app: WSGIApplication, settings: Settings, public_url: str) -> None:
        self.app = app
        cors = settings.cors
        # Cors answers a preflight itself and passes nothing else here.
        self.cors = Cors(
            app, cors.allowed_origins, public_url, cors.additional_headers, cors.max_age
        )

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if (
            environ.get("REQUEST_METHOD") == "OPTIONS"
            and "HTTP_ACCESS_CONTROL_REQUEST_METHOD" in environ
        ):
            return self.cors(environ, start_response)
        return self.app(environ, start_response)


class AppHandoff:
    """The last layer: give the app the JWT as `Authorization`, and the path that was checked."""

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        authorization = environ.pop("ory.authorization", None)
        if authorization:
            environ["HTTP_AUTHORIZATION"] = authorization
        path_info = environ.get("ory.path_info")
        if path_info is not None:
            # The path the rules judged (Decide), and nothing else, is what the app routes on.
            environ["PATH_INFO"] = path_info
            target = environ["ory.target"]
            for key in ("RAW_URI", "REQUEST_URI"):
                if key in environ:
                    environ[key] = target
        return self.app(environ, start_response)


def pass_through(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """A terminal app that answers nothing: the framework serves the request after the layers."""
    environ[PASSED_KEY] = True
    return []


@dataclasses.dataclass(frozen=True)
class Answer:
    """A response a layer gave instead of passing the request on."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


def run_layers(app: WSGIApplication, environ: WSGIEnvironment) -> Answer | None:
    """Run layers built on `pass_through`: None when they let the request through."""
    captured: list[tuple[str, list[tuple[str, str]]]] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        captured.append((status, headers))
        return lambda data: None

    environ.pop(PASSED_KEY, None)
    body = app(environ, start_response)
    try:
        data = b"".join(body)
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
    if environ.pop(PASSED_KEY, False) or not captured:
        return None
    status, headers = captured[-1]
    return Answer(int(status[:3]), list(headers), data)


class LoginEndpoint:
    """`/.ory/proxy/login?next=/path`: where a framework's "please log in" redirect lands.

    Django's `LOGIN_URL` and Flask-Login's `login_view` point here. A browser
    goes on to Ory's login (303, `return_to` = the public URL + `next`, a local
    path only); anything else gets 401 JSON, as on a protected path.
    """

    def __init__(self, public_url: str) -> None:
        self.public_url = public_url
        self.login_url = f"{public_url}/.ory/self-service/login/browser"

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if not (environ.get("REQUEST_METHOD") in ("GET", "HEAD") and wants_html(environ)):
            return error_answer(
                environ,
                start_response,
                401,
                "The request could not be authorized",
                headers=[("WWW-Authenticate", "Bearer")],
                force_json=True,
            )
        query = parse_qs(environ.get("QUERY_STRING", ""))
        next_path = (query.get("next") or ["/"])[0]
        if not _local_path(next_path):
            next_path = "/"
        aal = (query.get("aal") or [""])[0]
        location = (
            f"{self.login_url}?"
            + ("aal=aal2&" if aal == "aal2" else "")
            + "return_to="
            + quote(self.public_url + next_path, safe="")
        )
        start_response(
            "303 See Other",
            [("Location", location), ("Content-Length", "0"), ("Cache-Control", "no-store")],
        )
        return []


def _local_path(path: str) -> bool:
    """A path on this site: not `//host`, `/\\host`, a scheme or a control character."""
    if not path.startswith("/") or path.startswith(("//", "/\\")):
        return False
    if any(ord(ch) < 0x20 or ch == "\\" for ch in path):
        return False
    return not urlsplit(path).netloc
