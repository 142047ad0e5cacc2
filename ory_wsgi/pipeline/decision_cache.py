"""A per-worker cache of answers from a decision service: TTL, LRU and single-flight.

    cache = DecisionCache(lifetime=lambda allowed: 5.0, max_entries=10000)
    allowed = cache.get(("files", "doc-1", "view", "user:ada"), lambda: keto.check(...))

Keys are any hashable value that names the question (a rendered Keto tuple);
`lifetime(answer)` says how many seconds to keep an answer (0 or less: not at
all), so a handler can keep a denial shorter than an allowance or stop at a
token's expiry. Concurrent `get`s of a key that is not cached share one
`fetch`: the others wait for its answer, or its exception, which they all
raise and which is never kept (a service that is down is asked again by the
next request). At most `max_entries` answers are kept, the least recently used
going first. The approach is ory_wsgi.ory.cache.SessionCache's, made generic.

With a `shared` tier (the fleet's Redis, `ory_wsgi.fleet.shared_answers`) a
miss here asks the tier instead of `fetch`; the tier says how long the answer
has left, and this worker keeps it at most `memory_ttl` of that.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, Protocol, TypeVar

V = TypeVar("V")


class SharedAnswers(Protocol[V]):
    """A tier behind the memory: `get` returns the answer and the seconds it has left."""

    def get(self, key: Hashable, fetch: Callable[[], V]) -> tuple[V, float]: ...


class _Flight(Generic[V]):
    """One fetch under way, that later callers of the same key wait for."""

    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: V | None = None
        self.error: BaseException | None = None


class DecisionCache(Generic[V]):
    """Thread-safe, bounded; one fetch per key at a time. `ttl` 0 via `lifetime` keeps nothing."""

    def __init__(
        self,
        lifetime: Callable[[V], float],
        max_entries: int = 10000,
        shared: SharedAnswers[V] | None = None,
        memory_ttl: float = float("inf"),
    ) -> None:
        self.lifetime = lifetime
        self.max_entries = max_entries
        self.shared = shared
        self.memory_ttl = memory_ttl
        self._entries: OrderedDict[Hashable, tuple[float, V]] = OrderedDict()
        self._flights: dict[Hashable, _Flight[V]] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, fetch: Callable[[], V]) -> V:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                if entry[0] > time.monotonic():
                    self._entries.move_to_end(key)
                    return entry[1]
                del self._entries[key]
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
        if not leader:
            flight.done.wait()
            if flight.error is not None:
                raise flight.error
            return flight.value  # type: ignore[return-value]
        try:
            if self.shared is None:
                value = fetch()
                lifetime = self.lifetime(value)
            else:
                value, lifetime = self.shared.get(key, fetch)
            lifetime = min(lifetime, self.memory_ttl)
        except BaseException as exc:
            flight.error = exc
            with self._lock:
                del self._flights[key]
            flight.done.set()
            raise
        flight.value = value
        with self._lock:
            del self._flights[key]
            if lifetime > 0:
                self._entries[key] = (time.monotonic() + lifetime, value)
                self._entries.move_to_end(key)
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
        flight.done.set()
        return value

    def clear(self) -> None:
        """Forget this worker's answers (not those of a `shared` tier)."""
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
