"""Authenticators by name: who is this request? The first responsible one wins (Oathkeeper).

`cookie_session` and `bearer_token` ask Kratos (with the session cache),
`anonymous` names nobody in particular, `noop` names nobody, `unauthorized`
refuses. Part two adds `jwt` and `oauth2_introspection` to this dict.
"""

from __future__ import annotations

from typing import Any

from ory_wsgi.pipeline.authenticators.anonymous import Anonymous
from ory_wsgi.pipeline.authenticators.jwt import Jwt
from ory_wsgi.pipeline.authenticators.noop import Noop
from ory_wsgi.pipeline.authenticators.oauth2_introspection import OAuth2Introspection
from ory_wsgi.pipeline.authenticators.session import BearerToken, CookieSession
from ory_wsgi.pipeline.authenticators.unauthorized import Unauthorized

AUTHENTICATORS: dict[str, type[Any]] = {
    "cookie_session": CookieSession,
    "bearer_token": BearerToken,
    "oauth2_introspection": OAuth2Introspection,
    "anonymous": Anonymous,
    "noop": Noop,
    "unauthorized": Unauthorized,
    "jwt": Jwt,
}
