"""Django's WSGI application with Ory in front, for `wsgi.py`; importable before `django.setup()`.

from ory_wsgi.django_wsgi import get_wsgi_application
application = get_wsgi_application()
"""

from __future__ import annotations

from typing import Any

from django.conf import settings as django_settings

from ory_wsgi.middleware import OryMiddleware, settings_from_config
from ory_wsgi.settings import Settings
from ory_wsgi.wsgi import WSGIApplication

# Django-side names that are not settings of the Ory layers.
GLUE_SETTINGS = frozenset({"ORY_USER_TRAITS", "ORY_STRIP_HEADERS", "ORY_FORWARD_ORY"})


def ory_settings() -> Settings:
    """The Ory settings from Django's `ORY_*` settings."""
    names = {
        name: getattr(django_settings, name)
        for name in dir(django_settings)
        if name.startswith("ORY_")
    }
    return settings_from_config(names, ignore=GLUE_SETTINGS)


def middleware_options() -> dict[str, Any]:
    """`ORY_STRIP_HEADERS` and `ORY_FORWARD_ORY`, as `OryMiddleware` keyword arguments."""
    return {
        "strip_headers": tuple(getattr(django_settings, "ORY_STRIP_HEADERS", ())),
        "forward_ory": bool(getattr(django_settings, "ORY_FORWARD_ORY", True)),
    }


def get_wsgi_application() -> WSGIApplication:
    """Django's `get_wsgi_application()` wrapped in `OryMiddleware` (so `runserver` has it too).

    Adds what a Django middleware cannot do: `/.ory/*` forwarded to Ory with
    its several `Set-Cookie` lines intact. `ory_wsgi.django.OryMiddleware` in
    `MIDDLEWARE` then reuses this layer's session lookup instead of asking again.
    """
    from django.core.wsgi import get_wsgi_application as django_wsgi_application

    application = django_wsgi_application()
    return OryMiddleware(application, ory_settings(), **middleware_options())
