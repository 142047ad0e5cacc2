"""Django REST framework: `OryAuthentication` gives `request.user` and `request.auth` (the session).

    REST_FRAMEWORK = {"DEFAULT_AUTHENTICATION_CLASSES": ["ory_wsgi.drf.OryAuthentication"]}

Needs `ory_wsgi.django.OryMiddleware` in `MIDDLEWARE` (it does the lookup).
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from rest_framework.authentication import BaseAuthentication, CSRFCheck
from rest_framework.exceptions import AuthenticationFailed, PermissionDenied


class OryAuthentication(BaseAuthentication):  # type: ignore[misc]
    """The Ory session of the request: `(user, session)`, or None when there is none.

    A session proven by a cookie alone is a browser's: unsafe methods must then
    pass Django's CSRF check, as with DRF's SessionAuthentication. A session
    token (`X-Session-Token`, `Authorization: Bearer`) needs none. Without a
    session, DRF answers 401 with `WWW-Authenticate: Bearer`.
    """

    def authenticate(self, request: Any) -> tuple[Any, dict[str, Any]] | None:
        django_request = request._request
        environ = django_request.META
        if "ory.session" not in environ:
            raise ImproperlyConfigured(
                "OryAuthentication needs ory_wsgi.django.OryMiddleware in MIDDLEWARE"
            )
        session = environ["ory.session"]
        if session is None:
            return None
        user = django_request.user
        if not user.is_authenticated:
            raise AuthenticationFailed("This Ory identity has no active user here.")
        credentials = environ.get("ory.credentials")
        if credentials is None or not (credentials.session_token or credentials.bearer):
            self.enforce_csrf(django_request)
        return user, session

    def enforce_csrf(self, django_request: Any) -> None:
        def dummy_get_response(request: Any) -> None:  # pragma: no cover - never called
            return None

        check = CSRFCheck(dummy_get_response)
        check.process_request(django_request)
        reason = check.process_view(django_request, None, (), {})
        if reason:
            raise PermissionDenied(f"CSRF Failed: {reason}")

    def authenticate_header(self, request: Any) -> str:
        return "Bearer"
