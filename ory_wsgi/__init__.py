"""ory_wsgi: an identity-aware reverse proxy that puts a WSGI-served app and Ory on one domain."""

from __future__ import annotations

from ory_wsgi.app import make_app
from ory_wsgi.errors import ConfigError
from ory_wsgi.fleet.revoke import RevocationFailed, revoke
from ory_wsgi.middleware import OryMiddleware
from ory_wsgi.verifier import InvalidToken, verify

__version__ = "0.1.0"
__all__ = [
    "ConfigError",
    "InvalidToken",
    "OryMiddleware",
    "RevocationFailed",
    "__version__",
    "make_app",
    "revoke",
    "verify",
]
