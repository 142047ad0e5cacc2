"""Fleet scale on Redis (SPEC §17): what the workers of many hosts share about sessions.

    link = RedisLink(settings.session_cache.redis_url, timeout=0.25)
    store = SharedSessionStore(link, ttl=10.0, negative_ttl=2.0, lock_timeout=3.5)
    memory_cache.shared = store          # the per-worker cache asks the fleet on a miss
    RevocationListener(link, memory_cache).ensure_running()

- `redis_link`: one client per worker, every call bounded by `redis_timeout`,
  Redis faults turned into "degraded" (memory cache and Ory are used instead);
- `session_store`: the shared cache, fleet-wide single-flight and revocation;
- `revocations`: each worker's subscriber that drops revoked sessions from its memory;
- `budget`: the fleet-wide whoami budget (`[ory] max_calls_per_second`);
- `revoke`: `ory_wsgi.revoke(session_id)` and `ory-wsgi sessions revoke`.

redis-py is an extra (`pip install 'ory_wsgi[redis]'`): import these modules
only after `require_redis()`, which turns its absence into a `ConfigError`.
"""

from __future__ import annotations

from ory_wsgi.errors import ConfigError


def require_redis() -> None:
    """Raise a one-line `ConfigError` naming the extra when redis-py is not installed."""
    try:
        import redis  # noqa: F401
    except ImportError:
        raise ConfigError(
            "[session_cache] backend = \"redis\" needs redis-py: pip install 'ory_wsgi[redis]'"
        ) from None
