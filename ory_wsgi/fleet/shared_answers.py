"""Handlers' answers (Keto checks, introspections...) shared by the fleet through Redis.

    cache = DecisionCache(lifetime, max_entries, shared=RedisAnswers(link, "ory_permissions",
                          lifetime, encode, decode), memory_ttl=1.0)

The tier behind each worker's `DecisionCache` when `[session_cache] backend =
"redis"` (`Services.decision_cache` builds it). A miss in the worker's memory
reads `ory_wsgi:v1:answer:<handler>:<digest>`; on a miss there the worker
asks the service (`fetch`) and stores the answer for its `lifetime`. The
memory in front keeps it at most `memory_ttl`, and never past the expiry
Redis gave it.

Single-flight across the fleet, as for sessions: the memory's single-flight
sends one request per worker here; on a miss in Redis that request takes
a short lock (`<key>:lock`, `SET NX`, `LOCK_TIMEOUT`) and asks the service
while the other workers poll Redis for its answer. When the holder ends
without an answer to share (the service failed, or the answer is not to be
kept) or its lock expires (a worker that died), the waiters ask the service
themselves.

`<digest>` is a BLAKE2b of the cache key's `repr` (keys are tuples of
strings, so the same question has the same digest in every process): a
token or a tuple never appears in Redis. Values are
`{"v": encode(answer), "exp": epoch seconds}` JSON; one that does not decode
is a miss. Redis faults go through the link as for sessions: the memory and
the service are used instead, no request waits on Redis longer than
`redis_timeout`, and Redis is tried again every 5 s.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

from ory_wsgi.fleet.redis_link import REDIS_ERRORS, LuaScript, RedisLink

log = logging.getLogger("ory_wsgi.fleet")

V = TypeVar("V")

LOCK_TIMEOUT = 5.0
"""How long a lock holder that died can keep the others waiting (a live one releases it)."""
LOCK_SUFFIX = ":lock"
_FIRST_POLL = 0.002
_MAX_POLL = 0.02

# Release the lock only if it is still ours (it may have expired and been taken).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _same(value: Any) -> Any:
    return value


class RedisAnswers(Generic[V]):
    """`get(key, fetch)` -> (answer, seconds left): from Redis, else from `fetch`, then kept."""

    def __init__(
        self,
        link: RedisLink,
        name: str,
        lifetime: Callable[[V], float],
        encode: Callable[[V], Any] | None = None,
        decode: Callable[[Any], V] | None = None,
    ) -> None:
        self.link = link
        self.lifetime = lifetime
        self.encode = encode or _same
        self.decode = decode or _same
        self.prefix = link.key("answer", name, "")
        self.lock_timeout = LOCK_TIMEOUT
        self._release = LuaScript(link, _RELEASE)

    def redis_key(self, key: Hashable) -> str:
        return self.prefix + hashlib.blake2b(repr(key).encode(), digest_size=20).hexdigest()

    def get(self, key: Hashable, fetch: Callable[[], V]) -> tuple[V, float]:
        link = self.link
        redis_key = self.redis_key(key)
        token = None
        if link.usable():
            try:
                found, token = self._find(redis_key)
            except REDIS_ERRORS as exc:
                link.failed(exc)
            else:
                link.succeeded()
                if found is not None:
                    return found
        try:
            value = fetch()
            lifetime = self.lifetime(value)
            if lifetime > 0:
                self._store(redis_key, value, lifetime)
        finally:
            if token is not None:
                self._unlock(redis_key + LOCK_SUFFIX, token)
        return value, lifetime

    def _find(self, redis_key: str) -> tuple[tuple[V, float] | None, str | None]:
        """(the fleet's answer, None), or (None, our lock's token: ask the service and
        share), or (None, None): ask the service, the holder has nothing to share."""
        client = self.link.client
        raw = client.get(redis_key)
        found = self._read(raw) if raw else None
        if found is not None:
            return found, None
        lock_key = redis_key + LOCK_SUFFIX
        token = secrets.token_hex(8)
        if client.set(lock_key, token, nx=True, px=max(int(self.lock_timeout * 1000), 1)):
            return None, token
        deadline = time.monotonic() + self.lock_timeout
        pause = _FIRST_POLL
        while time.monotonic() < deadline:
            time.sleep(pause)
            pause = min(pause * 2, _MAX_POLL)
            pipe = client.pipeline(transaction=False)
            pipe.get(redis_key)
            pipe.exists(lock_key)
            raw, locked = pipe.execute()
            found = self._read(raw) if raw else None
            if found is not None or not locked:
                return found, None
        return None, None

    def _store(self, redis_key: str, value: V, lifetime: float) -> None:
        link = self.link
        if not link.usable():
            return
        stored = {"v": self.encode(value), "exp": time.time() + lifetime}
        try:
            link.client.set(redis_key, json.dumps(stored), px=max(int(lifetime * 1000), 1))
        except (TypeError, ValueError) as exc:
            # A handler's answer that JSON cannot hold: a bug to fix, not a Redis fault.
            log.error("%s: answer not shared (%s)", redis_key, exc)
        except REDIS_ERRORS as exc:
            link.failed(exc)
        else:
            link.succeeded()

    def _unlock(self, lock_key: str, token: str) -> None:
        try:
            self._release([lock_key], [token])
        except REDIS_ERRORS as exc:
            self.link.failed(exc)

    def _read(self, raw: bytes | str) -> tuple[V, float] | None:
        try:
            stored = json.loads(raw)
            left = float(stored["exp"]) - time.time()
            value = self.decode(stored["v"])
        except (ValueError, KeyError, IndexError, TypeError):
            return None
        if left <= 0:
            return None
        return value, left
