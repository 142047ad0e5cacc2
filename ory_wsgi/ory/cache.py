"""The per-worker session cache: TTL, LRU and single-flight in front of the whoami call.

    cache = SessionCache(ttl=10.0, negative_ttl=2.0, max_entries=10000)
    lookup = cache.get(credentials, lambda: client.whoami(credentials, request_id))

One cache per worker, built in make_app; keys are credential digests, never secrets.
A `shared` tier (the fleet's Redis store, `ory_wsgi.fleet`) may sit behind it:
a miss asks the tier, which asks Ory only when the fleet has no answer either.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from ory_wsgi.ory.client import Credentials, Lookup


def cache_lifetime(lookup: Lookup, ttl: float, negative_ttl: float) -> float:
    """Seconds `lookup` may be cached: `ttl` but never past the session's expiry,
    `negative_ttl` for a 401, 0 for anything else (errors, 429, aal2 are not cached).

    Shared by this cache and the fleet's Redis store so both tiers agree.
    """
    if lookup.outcome == "authenticated":
        lifetime = ttl
        if lookup.expires_at is not None:
            lifetime = min(lifetime, lookup.expires_at - time.time())
        return lifetime
    if lookup.outcome == "anonymous":
        return negative_ttl
    return 0.0


class _Flight:
    """One whoami call in progress, that later callers of the same key wait for."""

    __slots__ = ("done", "dropped", "error", "lookup")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.lookup: Lookup | None = None
        self.error: BaseException | None = None
        self.dropped = False


class SharedTier(Protocol):
    """What a miss of this cache asks instead of calling `fetch` itself."""

    def get(self, credentials: Credentials, fetch: Callable[[], Lookup]) -> Lookup: ...


class SessionCache:
    """Lookups by credential digest; thread-safe, bounded, one Ory call per key at a time.

    - authenticated: kept `ttl` seconds, never past the session's `expires_at`;
    - anonymous (401, or a session that is not active): kept `negative_ttl`;
    - errors, 429 and aal2_required: never kept (the next request asks again);
    - at most `max_entries`, the least recently used going first.

    Concurrent `get`s of one key that is not cached share one `fetch`: the
    others wait for its result, or for its exception, which they all raise
    and which caches nothing. `ttl = 0` keeps nothing at all (nor anonymous
    answers), but single-flight stays on: callers that arrive while a call is
    under way get its answer, which is no staler than one of their own.
    """

    def __init__(
        self, ttl: float = 10.0, negative_ttl: float = 2.0, max_entries: int = 10000
    ) -> None:
        self.ttl = ttl
        self.negative_ttl = negative_ttl if ttl > 0 else 0.0
        self.max_entries = max_entries
        self._entries: OrderedDict[bytes, tuple[float, Lookup]] = OrderedDict()
        self._flights: dict[bytes, _Flight] = {}
        self._lock = threading.Lock()
        self.shared: SharedTier | None = None

    def get(self, credentials: Credentials, fetch: Callable[[], Lookup]) -> Lookup:
        key = credentials.cache_key
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
            assert flight.lookup is not None
            return flight.lookup
        try:
            lookup = fetch() if self.shared is None else self.shared.get(credentials, fetch)
        except BaseException as exc:
            flight.error = exc
            with self._lock:
                del self._flights[key]
            flight.done.set()
            raise
        flight.lookup = lookup
        lifetime = cache_lifetime(lookup, self.ttl, self.negative_ttl)
        with self._lock:
            del self._flights[key]
            if lifetime > 0 and not flight.dropped:
                self._entries[key] = (time.monotonic() + lifetime, lookup)
                self._entries.move_to_end(key)
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
        flight.done.set()
        return lookup

    def drop(self, credentials: Credentials) -> None:
        """Forget this session (logout); a call under way for it will not be kept either."""
        self.drop_key(credentials.cache_key)

    def drop_key(self, key: bytes) -> None:
        """`drop` by credential digest (a revocation names digests, never credentials)."""
        with self._lock:
            self._entries.pop(key, None)
            flight = self._flights.get(key)
            if flight is not None:
                flight.dropped = True

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
