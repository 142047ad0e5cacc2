"""Flask integration: `Ory(app)`, `current_session`, `current_identity`, `@login_required`.

    app.config["ORY_SDK_URL"] = "https://acme.projects.oryapis.com"
    app.config["ORY_PUBLIC_URL"] = "https://app.example.com"
    Ory(app)

Settings come from `app.config["ORY_*"]` (see `ory_wsgi.middleware.settings_from_config`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast, overload

from flask import Flask, Response, current_app, request
from werkzeug.local import LocalProxy

from ory_wsgi.middleware import LOGIN_PATH, OryMiddleware, settings_from_config
from ory_wsgi.session_gate import SessionGate
from ory_wsgi.settings import Settings

__all__ = [
    "LOGIN_PATH",
    "Ory",
    "OryUser",
    "current_identity",
    "current_session",
    "login_required",
    "request_loader",
]

View = TypeVar("View", bound=Callable[..., Any])
EXTENSION = "ory"


def _session() -> dict[str, Any] | None:
    return cast("dict[str, Any] | None", request.environ.get("ory.session"))


def _identity() -> dict[str, Any] | None:
    return cast("dict[str, Any] | None", request.environ.get("ory.identity"))


# Proxies are never None: test them with `if current_identity:` (false without a session).
current_session: dict[str, Any] = cast("dict[str, Any]", LocalProxy(_session))
"""The whoami JSON of this request's Ory session; false when there is none."""
current_identity: dict[str, Any] = cast("dict[str, Any]", LocalProxy(_identity))
"""The identity of this request's Ory session (`id`, `traits`, ...); false when there is none."""


class Ory:
    """The Flask extension: wraps `app.wsgi_app` in `OryMiddleware`, configured from `app.config`.

    `Ory(app)`, or `ory = Ory()` then `ory.init_app(app)` in an app factory.
    `forward_ory` and `strip_headers` are passed to `OryMiddleware`.
    """

    def __init__(self, app: Flask | None = None, **middleware_options: Any) -> None:
        self.middleware_options = middleware_options
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        settings: Settings = settings_from_config(app.config)
        middleware = OryMiddleware(app.wsgi_app, settings, **self.middleware_options)
        app.wsgi_app = middleware  # type: ignore[method-assign]
        app.extensions[EXTENSION] = OryState(middleware, SessionGate(middleware.public_url))


class OryState:
    """What the extension keeps per app: the middleware and the gate of `login_required`."""

    def __init__(self, middleware: OryMiddleware, gate: SessionGate) -> None:
        self.middleware = middleware
        self.gate = gate
        self.cache_control = middleware.settings.proxy.protected_cache_control


@overload
def login_required(view: View, *, aal: str = "") -> View: ...
@overload
def login_required(view: None = None, *, aal: str = "") -> Callable[[View], View]: ...


def login_required(view: View | None = None, *, aal: str = "") -> View | Callable[[View], View]:
    """Serve the view only with an Ory session (of at least `aal`, e.g. "aal2").

    Otherwise a browser is sent to Ory's login (303) and any other client gets
    401 (403 when the AAL is too low) JSON in Kratos' error envelope; 503 when
    Ory could not be asked. No method is exempt, `OPTIONS` included: CORS
    preflights are answered by the middleware from `[cors]` before any view.
    The view's response gets `[proxy] protected_cache_control` when it has no
    Cache-Control.
    """
    if aal not in ("", "aal1", "aal2", "aal3"):
        raise ValueError(f"aal must be aal1, aal2 or aal3, not {aal!r}")

    def decorate(view: View) -> View:
        @functools.wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            state: OryState = current_app.extensions[EXTENSION]
            answer = state.gate.check(request.environ, aal)
            if answer is not None:
                return Response(answer.body, status=answer.status, headers=answer.headers)
            response = current_app.make_response(current_app.ensure_sync(view)(*args, **kwargs))
            # A member page must not come back from the browser's cache after logout.
            if state.cache_control and "Cache-Control" not in response.headers:
                response.headers["Cache-Control"] = state.cache_control
            return response

        return cast("View", guarded)

    return decorate(view) if view is not None else decorate


class OryUser:
    """A Flask-Login user made of an Ory identity (`get_id()` is the identity id)."""

    is_active = True
    is_authenticated = True
    is_anonymous = False

    def __init__(self, identity: dict[str, Any]) -> None:
        self.identity = identity
        self.id: str = str(identity["id"])
        self.traits: dict[str, Any] = identity.get("traits") or {}

    def get_id(self) -> str:
        return self.id


def request_loader(
    user_from_identity: Callable[[dict[str, Any]], Any] = OryUser,
) -> Callable[[Any], Any]:
    """A Flask-Login `request_loader` that takes the user from the Ory session.

        login_manager.request_loader(ory_wsgi.flask.request_loader(User.from_identity))
        login_manager.login_view = "/.ory/proxy/login"

    `user_from_identity(identity)` returns your user (or None); by default an `OryUser`.
    """

    def load(_request: Any) -> Any:
        identity = request.environ.get("ory.identity")
        return user_from_identity(identity) if identity else None

    return load
