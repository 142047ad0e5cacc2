"""Fleet scale on Redis (SPEC §17): what the workers of many hosts share about sessions.

    store = attach_fleet(settings, memory_cache)   # wiring: what ory_layers calls
    # = RedisLink + SharedSessionStore behind memory_cache + its RevocationListener

- `redis_link`: one client per worker, every call bounded by `redis_timeout`,
  Redis faults turned into "degraded" (memory cache and Ory are used instead);
- `session_store`: the shared cache, fleet-wide single-flight and revocation;
- `revocations`: each worker's subscriber that drops revoked sessions from its memory;
- `budget`: the whoami budget (`[ory] max_calls_per_second`);
- `shared_keys`: the JWT key set in Redis (`[jwt] keys_backend = "redis"`);
- `revoke`: `ory_wsgi.revoke(session_id)`, `ory-wsgi sessions revoke`, `keys rotate -c`;
- `wiring`: all of the above from the settings, for `ory_layers`.

`redis_link`, `session_store`, `revocations` and `shared_keys` import redis-py,
an extra (`pip install 'ory_wsgi[redis]'`): they are imported only after
`require_redis()`, which turns its absence into a one-line `ConfigError`.
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
