"""`/.ory/proxy/health/ready`: may a load balancer send this worker traffic?

    routes[READY_PATH] = Readiness(keys, client, degraded=redis_link.degraded)

Ready when the signing keys are loaded, Ory answered within the last
`interval` (10 s; when traffic has not made Ory answer lately, one probe of
Ory's `/health/alive` at most every `interval`), and shutdown has not begun.
While a fleet's Redis is out the worker stays ready (200) and says so:
`{"status": "ok", "degraded": true, "reason": "redis_unavailable: ..."}`.
Shutdown is announced by `begin_shutdown()`, which the shipped gunicorn
config calls from the worker's SIGTERM handler: the app never sees signals.

When access rules are configured (`rules`, the `RuleSource`), readiness is
503 `rules_not_loaded`, naming the load problem, until a valid rule set is in
force. Asking readiness also checks the rule files (`rules.current()`, at
most once a reload interval), so a fixed file turns a worker ready without
traffic. A later broken edit keeps the last good set in force: readiness
stays 200 and says `"rules_error": "<why the edit was not loaded>"`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from urllib3.exceptions import HTTPError
from urllib3.util import Timeout

from ory_wsgi.answers import json_answer
from ory_wsgi.keys import KeySet
from ory_wsgi.ory.client import OryClient
from ory_wsgi.wsgi import StartResponse, WSGIEnvironment

log = logging.getLogger("ory_wsgi.readiness")

READY_PATH = "/.ory/proxy/health/ready"
CHECK_INTERVAL = 10.0
_HEADERS = [("Cache-Control", "no-store")]

# A plain module flag, not an Event: it is set from a signal handler, where
# taking a lock the interrupted thread may hold could deadlock.
_shutting_down = False


class RuleState(Protocol):
    """What readiness reads of the rule source (`ory_wsgi.rules.watch.RuleSource`)."""

    @property
    def ready(self) -> bool: ...

    @property
    def error(self) -> str: ...

    def current(self) -> object: ...


def begin_shutdown() -> None:
    """Turn readiness 503 in this process from now on (signal-safe)."""
    global _shutting_down
    _shutting_down = True


def shutting_down() -> bool:
    return _shutting_down


class Readiness:
    """The readiness endpoint; `keys` None when no JWT is minted, `client` None without Ory."""

    def __init__(
        self,
        keys: KeySet | None = None,
        client: OryClient | None = None,
        interval: float = CHECK_INTERVAL,
        degraded: Callable[[], str] | None = None,
        rules: RuleState | None = None,
    ) -> None:
        self.keys = keys
        self.rules = rules
        self.client = client
        self.degraded = degraded
        """Why the worker runs with less than it should ("" when it does not), e.g. no Redis."""
        self.interval = interval
        self._last_probe = float("-inf")
        self._probe_answered = float("-inf")
        self._probe_lock = threading.Lock()
        if client is not None:
            self._probe_path = client.whoami_path.removesuffix("/sessions/whoami") + "/health/alive"
            self._probe_timeout = Timeout(
                connect=client.connect_timeout, read=min(client.timeout, 2.0)
            )

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        reason, message = self.problem()
        if reason:
            return json_answer(
                start_response,
                503,
                {"status": "unavailable", "reason": reason, "message": message},
                [*_HEADERS, ("Retry-After", "5")],
            )
        body: dict[str, object] = {"status": "ok"}
        if self.degraded is not None and (why := self.degraded()):
            body["degraded"] = True
            body["reason"] = why
        if self.rules is not None and self.rules.error:
            body["rules_error"] = self.rules.error
        return json_answer(start_response, 200, body, _HEADERS)

    def problem(self) -> tuple[str, str]:
        """("", "") when ready, else a reason code and a sentence for whoever reads the probe."""
        if _shutting_down:
            return "shutting_down", "This worker is shutting down."
        if self.keys is not None and not self.keys.material.keys:
            return "keys_not_loaded", "No signing key is loaded."
        rules = self.rules
        if rules is not None:
            rules.current()  # checks the files once an interval, as a request would
            if not rules.ready:
                return "rules_not_loaded", f"No valid access rule set is loaded: {rules.error}"
        client = self.client
        if client is None:
            return "", ""
        now = time.monotonic()
        if now - max(client.last_answer, self._probe_answered) <= self.interval:
            return "", ""
        if now - self._last_probe >= self.interval and self._probe_lock.acquire(blocking=False):
            try:
                self._last_probe = now
                if self._probe(client):
                    self._probe_answered = time.monotonic()
                    return "", ""
            finally:
                self._probe_lock.release()
        return "ory_unavailable", f"Ory has not answered in the last {self.interval:g}s."

    def _probe(self, client: OryClient) -> bool:
        try:
            response = client.pool.urlopen(
                "GET",
                self._probe_path,
                headers={"Accept": "application/json"},
                retries=False,
                redirect=False,
                timeout=self._probe_timeout,
            )
        except (HTTPError, OSError) as exc:
            log.warning("readiness: Ory did not answer %s: %s", self._probe_path, exc)
            return False
        if response.status >= 500:
            log.warning("readiness: Ory answered %s with %d", self._probe_path, response.status)
            return False
        return True
