"""The test upstream, recording every request it receives: what got through, and how."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from upstream_app import app as upstream_wsgi


@dataclass
class Seen:
    method: str
    raw_uri: str
    authorization: str
    headers: dict[str, str] = field(default_factory=dict)
    answered: bool = False
    """The test upstream read the whole request and answered it."""


class RecordingUpstream:
    """tests/upstream_app.py, remembering each request's method, path, headers, Authorization."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        seen = Seen(
            environ["REQUEST_METHOD"],
            environ.get("REQUEST_URI") or environ.get("RAW_URI", ""),
            environ.get("HTTP_AUTHORIZATION", ""),
            {k: str(v) for k, v in environ.items() if k.startswith("HTTP_")},
        )
        with self.lock:
            self.seen.append(seen)
        answer: Iterable[bytes] = upstream_wsgi(environ, start_response)
        seen.answered = True
        return answer

    def since(self, count: int) -> list[Seen]:
        with self.lock:
            return self.seen[count:]
