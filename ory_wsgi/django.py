"""Django integration: `OryMiddleware` + `OryBackend` make `request.user` the Ory identity's user.

    MIDDLEWARE = [..., "django.contrib.auth.middleware.AuthenticationMiddleware",
                  "ory_wsgi.django.OryMiddleware", ...]
    AUTHENTICATION_BACKENDS = ["ory_wsgi.django.OryBackend"]
    ORY_SDK_URL = "https://acme.projects.oryapis.com"
    ORY_PUBLIC_URL = "https://app.example.com"
    LOGIN_URL = "/.ory/proxy/login"

Settings are `ORY_*` names (see `ory_wsgi.middleware.settings_from_config`),
plus `ORY_USER_TRAITS` (user field -> dotted path in the identity), and
`ORY_STRIP_HEADERS` / `ORY_FORWARD_ORY` for the middleware. For `/.ory/*`
forwarding, `wsgi.py` uses `ory_wsgi.django_wsgi.get_wsgi_application`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings as django_settings
from django.contrib import auth
from django.contrib.auth.backends import RemoteUserBackend
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ImproperlyConfigured
from django.core.handlers.wsgi import get_path_info
from django.http import HttpRequest, HttpResponse
from django.utils.functional import SimpleLazyObject

from ory_wsgi import middleware as embedded
from ory_wsgi.django_wsgi import middleware_options, ory_settings
from ory_wsgi.middleware import Answer, pass_through, run_layers
from ory_wsgi.paths import EMBEDDED_KEY

DEFAULT_TRAITS = {"email": "traits.email"}
AUTHENTICATION_MIDDLEWARE = "django.contrib.auth.middleware.AuthenticationMiddleware"


class OryMiddleware:
    """Looks up the Ory session, applies `[[protect]]`, and sets `request.user`.

    Put it after `AuthenticationMiddleware`. The user is found or created by
    `OryBackend` only when a view reads `request.user`. Without an Ory session,
    `request.user` is left as `AuthenticationMiddleware` set it (or anonymous).
    Also sets `request.ory_session` and `request.ory_identity`.
    """

    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        _check_configuration()
        options = middleware_options()
        options["forward_ory"] = False  # Django responses cannot carry Ory's Set-Cookie lines
        self.layers = embedded.OryMiddleware(pass_through, ory_settings(), **options)
        self.cache_control = self.layers.settings.proxy.protected_cache_control

    def __call__(self, request: HttpRequest) -> Any:
        environ = request.META
        if not environ.get(EMBEDDED_KEY):
            old_path_info = request.path_info
            answer = run_layers(self.layers, environ)
            if answer is not None:
                return django_response(answer)
            if environ.get("ory.target") is not None:
                new_path_info = get_path_info(environ)
                prefix = request.path[: len(request.path) - len(old_path_info)]
                request.path_info = new_path_info
                request.path = prefix + new_path_info
        session = environ.get("ory.session")
        identity = environ.get("ory.identity")
        request.ory_session = session
        request.ory_identity = identity
        if identity:
            resolve = functools.cache(functools.partial(_user_of, request, identity))
            request.user = SimpleLazyObject(resolve)

            async def auser() -> Any:
                return await sync_to_async(resolve)()

            request.auser = auser
        elif not hasattr(request, "user"):
            request.user = AnonymousUser()
        response = self.get_response(request)
        # A page served under a [[protect]] rule must not come back from the
        # browser's cache after logout.
        if (
            self.cache_control
            and environ.get("ory.rule") is not None
            and not response.has_header("Cache-Control")
        ):
            response["Cache-Control"] = self.cache_control
        return response


def _user_of(request: HttpRequest, identity: Mapping[str, Any]) -> Any:
    return auth.authenticate(request, ory_identity=identity) or AnonymousUser()


def _check_configuration() -> None:
    if not any(isinstance(backend, OryBackend) for backend in auth.get_backends()):
        raise ImproperlyConfigured(
            'AUTHENTICATION_BACKENDS must include "ory_wsgi.django.OryBackend"'
        )
    middleware = list(getattr(django_settings, "MIDDLEWARE", None) or ())
    ours = [i for i, name in enumerate(middleware) if name == "ory_wsgi.django.OryMiddleware"]
    if AUTHENTICATION_MIDDLEWARE in middleware and ours:
        if ours[0] < middleware.index(AUTHENTICATION_MIDDLEWARE):
            raise ImproperlyConfigured(
                "ory_wsgi.django.OryMiddleware must come after AuthenticationMiddleware "
                "in MIDDLEWARE, or the Ory user is replaced by the Django session's"
            )


def django_response(answer: Answer) -> HttpResponse:
    response = HttpResponse(answer.body, status=answer.status)
    for name, value in answer.headers:
        response[name] = value
    return response


class OryBackend(RemoteUserBackend):  # type: ignore[misc]
    """RemoteUser-style backend: the Django user whose username is the Ory identity id.

    Found or created (`create_unknown_user`), then the fields named in
    `ORY_USER_TRAITS` (default `{"email": "traits.email"}`) are copied from
    the identity when they changed. A user marked inactive in Django is refused.
    Only `OryMiddleware` can authenticate through it: it takes no username.
    """

    def authenticate(
        self, request: HttpRequest | None, ory_identity: Mapping[str, Any] | None = None
    ) -> Any:
        if not ory_identity or not ory_identity.get("id"):
            return None
        user = super().authenticate(request, remote_user=str(ory_identity["id"]))
        if user is not None:
            self.update_user(user, ory_identity)
        return user

    def update_user(self, user: Any, identity: Mapping[str, Any]) -> None:
        """Copy the mapped traits onto the user; saves only when something changed."""
        configured: Mapping[str, str] | None = getattr(django_settings, "ORY_USER_TRAITS", None)
        explicit = configured is not None
        mapping = DEFAULT_TRAITS if configured is None else configured
        changed = []
        for field, path in mapping.items():
            if not explicit and not _has_field(user, field):
                continue
            value = _lookup(identity, path)
            if value is not None and getattr(user, field, None) != value:
                setattr(user, field, value)
                changed.append(field)
        if changed:
            user.save(update_fields=changed)


def _has_field(user: Any, name: str) -> bool:
    try:
        user._meta.get_field(name)
    except Exception:  # FieldDoesNotExist; any model without the field
        return False
    return True


def _lookup(document: Mapping[str, Any], path: str) -> Any:
    value: Any = document
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value
