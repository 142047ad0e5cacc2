"""A Keto (Ory Permissions) stand-in: relation tuples in memory and Keto's check API.

    keto = FakeKeto()
    keto.add("files", "doc-1", "view", subject_id="user:ada")
    keto.add("files", "doc-1", "view", subject_set=("groups", "admins", "member"))
    with serve_keto(keto=keto) as server:      # server.url is Keto's read API base URL
        ...
    assert keto.check_calls == 1

Served like Keto's read API (v0.11+):
- `POST /relation-tuples/check/openapi` with `{namespace, object, relation,
  subject_id | subject_set: {namespace, object, relation}}` answers 200
  `{"allowed": true|false}`; `GET` takes the same as query parameters
  (`subject_set.namespace`, ...).
- `/relation-tuples/check` (not openapi) answers 403 with `{"allowed": false}` when denied.
- A malformed request is 400 with Keto's error envelope.
A subject set is expanded as Keto does (members of the set are members of the
relation), to a bounded depth. `fail_checks(status, retry_after=...)` makes
every check answer that status (503 outage, 429 rate limit) until `reset()`;
`delay` slows each check (single-flight tests). `check_calls` counts checks.
`require_api_key("ory_pat_...")` makes every check without
`Authorization: Bearer ory_pat_...` answer 401, as Ory Network does.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from types import TracebackType
from typing import Any

from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response

from ory_wsgi.testing.server import _QuietRequestHandler
from ory_wsgi.wsgi import StartResponse, WSGIEnvironment

SubjectSet = tuple[str, str, str]
# (namespace, object, relation, subject): subject is "id" or a SubjectSet.
Tuple = tuple[str, str, str, str | SubjectSet]
MAX_DEPTH = 5
CHECK_PATHS = ("/relation-tuples/check/openapi", "/relation-tuples/check")


class FakeKeto:
    """Relation tuples, a check counter and injected faults; a WSGI app."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.url = ""  # set by the server that serves it
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.tuples: set[Tuple] = set()
            self.check_calls = 0
            self.fault: tuple[int, str | None] | None = None
            self.delay = 0.0
            self.api_key: str | None = None

    def add(
        self,
        namespace: str,
        object: str,
        relation: str,
        *,
        subject_id: str | None = None,
        subject_set: SubjectSet | None = None,
    ) -> None:
        subject: str | SubjectSet | None = subject_id if subject_id is not None else subject_set
        if subject is None or (subject_id is not None and subject_set is not None):
            raise ValueError("give exactly one of subject_id or subject_set")
        with self._lock:
            self.tuples.add((namespace, object, relation, subject))

    def remove(self, namespace: str, object: str, relation: str, subject: str | SubjectSet) -> None:
        with self._lock:
            self.tuples.discard((namespace, object, relation, subject))

    def require_api_key(self, key: str | None) -> None:
        """Checks need `Authorization: Bearer <key>` from now on (None: no key, the default)."""
        self.api_key = key

    def fail_checks(self, status: int, retry_after: str | None = None) -> None:
        self.fault = (status, retry_after)

    def allowed(
        self, namespace: str, object: str, relation: str, subject: str | SubjectSet, depth: int = 0
    ) -> bool:
        if (namespace, object, relation, subject) in self.tuples:
            return True
        if depth >= MAX_DEPTH:
            return False
        for ns, obj, rel, member in list(self.tuples):
            if (ns, obj, rel) == (namespace, object, relation) and isinstance(member, tuple):
                if self.allowed(*member, subject, depth + 1):
                    return True
        return False

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        return self.answer(Request(environ))(environ, start_response)

    def answer(self, request: Request) -> Response:
        if request.path not in CHECK_PATHS:
            return _error(404, "Not Found", "The requested resource could not be found")
        if request.method not in ("GET", "POST"):
            return _error(405, "Method Not Allowed", "method not allowed")
        with self._lock:
            self.check_calls += 1
        if self.api_key is not None and request.headers.get("Authorization") != (
            f"Bearer {self.api_key}"
        ):
            return _error(401, "Unauthorized", "The request could not be authorized")
        if self.delay:
            time.sleep(self.delay)
        if self.fault is not None:
            status, retry_after = self.fault
            response = _error(status, "Fault", "injected by the test")
            if retry_after is not None:
                response.headers["Retry-After"] = retry_after
            return response
        try:
            question = _question(request)
        except ValueError as exc:
            return _error(400, "Bad Request", str(exc))
        allowed = self.allowed(*question)
        status = 403 if not allowed and request.path == CHECK_PATHS[1] else 200
        return Response(json.dumps({"allowed": allowed}), status, mimetype="application/json")


def _question(request: Request) -> tuple[str, str, str, str | SubjectSet]:
    if request.method == "POST":
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise ValueError("the request body is not a JSON object")
        flat: dict[str, Any] = dict(body)
        subject_set = body.get("subject_set")
        if isinstance(subject_set, dict):
            for key in ("namespace", "object", "relation"):
                flat[f"subject_set.{key}"] = subject_set.get(key)
    else:
        flat = dict(request.args.items())
    parts = [flat.get(key) for key in ("namespace", "object", "relation")]
    if not all(isinstance(part, str) and part for part in parts):
        raise ValueError("namespace, object and relation are required")
    subject_id = flat.get("subject_id")
    set_parts = [flat.get(f"subject_set.{key}") for key in ("namespace", "object", "relation")]
    has_set = any(part is not None for part in set_parts)
    if (subject_id is not None) == has_set:
        raise ValueError("exactly one of subject_id or subject_set is required")
    if subject_id is not None:
        if not isinstance(subject_id, str):
            raise ValueError("subject_id must be a string")
        return str(parts[0]), str(parts[1]), str(parts[2]), subject_id
    if not all(isinstance(part, str) for part in set_parts):
        raise ValueError("subject_set needs namespace, object and relation")
    subject_set = (str(set_parts[0]), str(set_parts[1]), str(set_parts[2]))
    return str(parts[0]), str(parts[1]), str(parts[2]), subject_set


def _error(status: int, name: str, message: str) -> Response:
    body = {"error": {"code": status, "status": name, "message": message}}
    return Response(json.dumps(body), status, mimetype="application/json")


class FakeKetoServer:
    """A FakeKeto served on `host:port` (0 = a free port) until `stop()`; a context manager."""

    def __init__(self, keto: FakeKeto, host: str = "127.0.0.1", port: int = 0) -> None:
        self.keto = keto
        self._server: BaseWSGIServer = make_server(
            host, port, keto, threaded=True, request_handler=_QuietRequestHandler
        )
        self.port = int(self._server.server_port)
        self.url = f"http://{host}:{self.port}"
        keto.url = self.url
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"fake-keto-{self.port}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> FakeKetoServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def serve_keto(
    host: str = "127.0.0.1", port: int = 0, *, keto: FakeKeto | None = None
) -> FakeKetoServer:
    """Start a Keto stand-in in a background thread."""
    return FakeKetoServer(keto or FakeKeto(), host, port)
