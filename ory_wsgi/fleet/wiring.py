"""Put the fleet together for one worker from the settings (used by `ory_layers`).

    store = attach_fleet(settings, memory_cache)   # None: nothing shared

    keys = key_set(settings)                        # [jwt] keys_backend: file or Redis

`[session_cache] backend = "redis"`: the memory cache gets the Redis store
behind it, a revocation listener and, with `[ory] max_calls_per_second`, the
fleet-wide budget. The memory backend with a budget gets a per-worker one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ory_wsgi.fleet import require_redis
from ory_wsgi.fleet.budget import WhoamiBudget
from ory_wsgi.keys import KeySet
from ory_wsgi.ory.cache import SessionCache
from ory_wsgi.ory.client import Credentials, Lookup
from ory_wsgi.settings import Settings

if TYPE_CHECKING:
    from ory_wsgi.fleet.session_store import SharedSessionStore
    from ory_wsgi.fleet.shared_answers import RedisAnswers

V = TypeVar("V")

# The lock outlives Ory's timeout by this much, so a slow but live holder keeps it.
LOCK_MARGIN = 0.5


class BudgetOnly:
    """The `SharedTier` of the memory backend with a budget: every whoami draws from it."""

    def __init__(self, budget: WhoamiBudget) -> None:
        self.budget = budget

    def get(self, credentials: Credentials, fetch: Callable[[], Lookup]) -> Lookup:
        return self.budget.call(fetch)


def memory_ttl(settings: Settings) -> float:
    """The memory cache's TTL: `memory_ttl` in front of Redis (never above `ttl`), else `ttl`."""
    cache = settings.session_cache
    if cache.backend == "redis":
        return min(cache.memory_ttl, cache.ttl)
    return cache.ttl


def attach_fleet(settings: Settings, memory: SessionCache) -> SharedSessionStore | None:
    """Connect `memory` to the fleet as configured; the store (for logout, readiness) or None."""
    cache, ory = settings.session_cache, settings.ory
    if cache.backend != "redis":
        if ory.max_calls_per_second:
            memory.shared = BudgetOnly(WhoamiBudget(ory.max_calls_per_second, ory.max_call_wait))
        return None
    require_redis()
    from ory_wsgi.fleet.redis_link import RedisLink, RedisWindowCounter
    from ory_wsgi.fleet.revocations import RevocationListener
    from ory_wsgi.fleet.session_store import SharedSessionStore

    link = RedisLink(cache.redis_url, timeout=cache.redis_timeout, cluster=cache.redis_cluster)
    budget = None
    if ory.max_calls_per_second:
        budget = WhoamiBudget(
            ory.max_calls_per_second, ory.max_call_wait, shared=RedisWindowCounter(link)
        )
    store = SharedSessionStore(
        link,
        ttl=cache.ttl,
        negative_ttl=cache.negative_ttl,
        lock_timeout=ory.timeout + ory.max_call_wait + LOCK_MARGIN,
        budget=budget,
    )
    store.listener = RevocationListener(link, store.channel, memory)
    memory.shared = store
    return store


def answer_tier(
    settings: Settings,
    memory: SessionCache | None,
    name: str,
    lifetime: Callable[[V], float],
    encode: Callable[[V], Any] | None,
    decode: Callable[[Any], V] | None,
) -> RedisAnswers[V] | None:
    """The Redis tier of handler `name`'s answer cache, or None with the memory backend.

    It shares the session store's link (one client, one health, per worker) when there is
    one; a proxy without Kratos gets a link of its own for each handler.
    """
    cache = settings.session_cache
    if cache.backend != "redis":
        return None
    require_redis()
    from ory_wsgi.fleet.redis_link import RedisLink
    from ory_wsgi.fleet.shared_answers import RedisAnswers

    link = getattr(getattr(memory, "shared", None), "link", None)
    if not isinstance(link, RedisLink):
        link = RedisLink(cache.redis_url, cache.redis_timeout, cluster=cache.redis_cluster)
    return RedisAnswers(link, name, lifetime, encode, decode)


def key_set(settings: Settings) -> KeySet:
    """The JWT key set: the file (`keys_file`, or generated in `state_dir`), or Redis'."""
    jwt, state_dir = settings.jwt, settings.proxy.state_dir
    if jwt.keys_backend != "redis":
        return KeySet.ensure(jwt.keys_file, state_dir)
    require_redis()
    from ory_wsgi.fleet.redis_link import RedisLink
    from ory_wsgi.fleet.shared_keys import RedisKeySet

    cache = settings.session_cache
    link = RedisLink(cache.redis_url, cache.redis_timeout, cluster=cache.redis_cluster)
    return RedisKeySet(link, state_dir, jwt.keys_file)


def redis_health(store: SharedSessionStore | None, keys: KeySet | None) -> Callable[[], str] | None:
    """For readiness: why a Redis this worker uses is out ("" when none is), or None."""
    from_keys = getattr(keys, "link", None)  # a RedisKeySet's
    links = [link for link in (store.link if store else None, from_keys) if link is not None]
    if not links:
        return None

    def degraded() -> str:
        return next((why for why in (link.degraded() for link in links) if why), "")

    return degraded
