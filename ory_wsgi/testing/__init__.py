"""The local Ory stand-in: a small Kratos-compatible server for the demo and for tests."""

from __future__ import annotations

from ory_wsgi.testing.documents import KratosError
from ory_wsgi.testing.kratos import (
    FakeKratos,
    IssuedSession,
    LoggedRequest,
    session_cookie_value,
)
from ory_wsgi.testing.server import FakeKratosServer, serve

__all__ = [
    "FakeKratos",
    "FakeKratosServer",
    "IssuedSession",
    "KratosError",
    "LoggedRequest",
    "serve",
    "session_cookie_value",
]
