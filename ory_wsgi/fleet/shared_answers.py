"""Handlers' answers (Keto checks, introspections...) shared by the fleet through Redis.

    cache = DecisionCache(lifetime, max_entries, shared=RedisAnswers(link, "ory_permissions",
                          lifetime, encode, decode), memory_ttl=1.0)

The tier behind each worker's `DecisionCache` when `[session_cache] backend =
"redis"` (`Services.decision_cache` builds it). A miss in the worker's memory
reads `ory_wsgi:v1:answer:<handler>:<digest>`; on a miss there the worker
asks the service (`fetch`) and stores the answer for its `lifetime`. The
memory in front keeps it at most `memory_ttl`, and never past the expiry
Redis gave it. Single-flight is per worker (the memory's); concurrent first
requests for one question on N workers may ask the service N times, after
which the fleet shares the answer for its lifetime.

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
import time
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

from ory_wsgi.fleet.redis_link import REDIS_ERRORS, RedisLink

log = logging.getLogger("ory_wsgi.fleet")

V = TypeVar("V")


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

    def redis_key(self, key: Hashable) -> str:
        return self.prefix + hashlib.blake2b(repr(key).encode(), digest_size=20).hexdigest()

    def get(self, key: Hashable, fetch: Callable[[], V]) -> tuple[V, float]:
        link = self.link
        redis_key = self.redis_key(key)
        if link.usable():
            try:
                raw = link.client.get(redis_key)
            except REDIS_ERRORS as exc:
                link.failed(exc)
            else:
                link.succeeded()
                found = self._read(raw) if raw else None
                if found is not None:
                    return found
        value = fetch()
        lifetime = self.lifetime(value)
        if lifetime > 0 and link.usable():
            stored = {"v": self.encode(value), "exp": time.time() + lifetime}
            try:
                link.client.set(redis_key, json.dumps(stored), px=max(int(lifetime * 1000), 1))
            except (TypeError, ValueError) as exc:
                # A handler's answer that JSON cannot hold: a bug to fix, not a fault.
                log.error("%s: answer not shared (%s)", redis_key, exc)
            except REDIS_ERRORS as exc:
                link.failed(exc)
            else:
                link.succeeded()
        return value, lifetime

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
