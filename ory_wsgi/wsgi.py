"""WSGI type names shared by the wrappers."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

WSGIEnvironment = dict[str, Any]
StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApplication = Callable[[WSGIEnvironment, StartResponse], Iterable[bytes]]
