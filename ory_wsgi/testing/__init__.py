"""The local Ory stand-in: a small Kratos-compatible server for the demo and for tests."""

from __future__ import annotations

from ory_wsgi.testing.documents import KratosError
from ory_wsgi.testing.kratos import FakeKratos
from ory_wsgi.testing.server import FakeKratosServer, serve
from ory_wsgi.testing.store import IssuedSession, LoggedRequest, session_cookie_value

__all__ = [
    "FakeKratos",
    "FakeKratosServer",
    "IssuedSession",
    "KratosError",
    "LoggedRequest",
    "serve",
    "session_cookie_value",
]
