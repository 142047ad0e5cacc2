"""The fleet-wide whoami budget: at most `max_calls_per_second` calls to Ory, all hosts together.

    budget = WhoamiBudget(per_second=50, max_wait=0.25, shared=RedisWindowCounter(link))
    lookup = budget.call(lambda: client.whoami(credentials, request_id))

Only whoami calls count (cache hits never reach this). The count is a
fixed one-second window in Redis (`RedisWindowCounter`: `INCR` of a key
named for the second), so every worker of every host draws from one budget. Over budget, a call
waits for the next window when that is at most `max_wait` away, then tries
once more; otherwise it gets `OVER_BUDGET`, an error lookup: protected paths
answer 503 with Retry-After (they never fail open), open paths go on
anonymous. Each refusal is logged as `rate_limited`, at most once a second.

While Redis is out, each worker counts on its own against the same limit:
Ory is still protected, though the fleet may then spend up to one budget per
worker.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

from ory_wsgi.ory.client import Lookup

log = logging.getLogger("ory_wsgi.fleet")

OVER_BUDGET = Lookup("error", error="whoami_budget")

SharedCounter = Callable[[int], int | None]
"""Count one call in the window (epoch second) and return the window's total; None: unknown."""


class WhoamiBudget:
    """Spend one unit per whoami call, fleet-wide through `shared` when it answers, else here."""

    def __init__(
        self, per_second: int, max_wait: float, shared: SharedCounter | None = None
    ) -> None:
        self.per_second = per_second
        self.max_wait = max_wait
        self.shared = shared
        self._local_window = 0
        self._local_used = 0
        self._lock = threading.Lock()
        self._last_logged = 0.0

    def call(self, fetch: Callable[[], Lookup]) -> Lookup:
        for attempt in range(2):
            now = time.time()
            if self._take(math.floor(now)):
                return fetch()
            wait = math.floor(now) + 1 - now
            if attempt or wait > self.max_wait:
                break
            time.sleep(wait)
        self._refused()
        return OVER_BUDGET

    def _take(self, window: int) -> bool:
        used = self.shared(window) if self.shared is not None else None
        if used is not None:
            return used <= self.per_second
        with self._lock:
            if window != self._local_window:
                self._local_window, self._local_used = window, 0
            self._local_used += 1
            return self._local_used <= self.per_second

    def _refused(self) -> None:
        now = time.monotonic()
        if now - self._last_logged >= 1.0:
            self._last_logged = now
            log.warning(
                "rate_limited: the whoami budget of %d calls a second is spent",
                self.per_second,
                extra={"fields": {"error": "rate_limited"}},
            )
