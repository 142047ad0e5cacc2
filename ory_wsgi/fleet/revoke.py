"""Fleet commands: `ory_wsgi.revoke(session_id)` drops a session from every cache, now;
`rotate_redis_keys` rotates the key set kept in Redis (`ory-wsgi keys rotate -c FILE`).

    ory_wsgi.revoke("b1f4…", config="ory.toml")     # or: ory-wsgi sessions revoke ID -c ory.toml

It does not end the session in Ory (Ory's admin API does that); it makes
every worker of every host that shares the configured Redis forget what it
cached about the session, so the next request asks Ory again. When it
returns, every subscribed worker has been told (delivery takes about a
millisecond); when Redis cannot be reached it raises `RevocationFailed`.
"""

from __future__ import annotations

import os
from typing import Any

from ory_wsgi.errors import ConfigError
from ory_wsgi.fleet import require_redis
from ory_wsgi.settings import load_settings

# An admin command may wait a little longer for Redis than a request does.
MIN_TIMEOUT = 2.0


class RedisUnreachable(Exception):
    """Redis could not be reached: the command did nothing."""


class RevocationFailed(RedisUnreachable):
    """Redis could not be reached: the revocation was not published."""


def revoke(session_id: str, config: str | os.PathLike[str] | None = None, **overrides: Any) -> int:
    """Drop `session_id` from the fleet's caches; how many shared entries were dropped.

    `config` and `overrides` are read as by `make_app`; the settings must name
    `[session_cache] backend = "redis"` (a memory cache cannot be reached
    from outside its worker).
    """
    session_id = session_id.strip()
    if not session_id:
        raise ConfigError("revoke: no session id given")
    settings = load_settings(config, overrides=overrides)
    cache = settings.session_cache
    if cache.backend != "redis":
        raise ConfigError(
            'revoke needs [session_cache] backend = "redis": each worker\'s memory cache '
            "is private to it"
        )
    require_redis()
    from ory_wsgi.fleet.redis_link import REDIS_ERRORS, RedisLink
    from ory_wsgi.fleet.session_store import SharedSessionStore

    link = RedisLink(
        cache.redis_url, timeout=max(cache.redis_timeout, MIN_TIMEOUT), cluster=cache.redis_cluster
    )
    try:
        return SharedSessionStore(link, ttl=cache.ttl).revoke(session_id)
    except REDIS_ERRORS as exc:
        raise RevocationFailed(f"revoke: Redis did not answer: {exc}") from None
    finally:
        link.close()


def rotate_redis_keys(config: str | os.PathLike[str] | None = None) -> str:
    """Put a new signing key first in the fleet's key set in Redis; the new kid."""
    settings = load_settings(config)
    if settings.jwt.keys_backend != "redis":
        raise ConfigError(
            'keys rotate: name the key FILE, or a config with [jwt] keys_backend = "redis"'
        )
    require_redis()
    from ory_wsgi.fleet.redis_link import REDIS_ERRORS, RedisLink
    from ory_wsgi.fleet.shared_keys import rotate_in_redis

    cache = settings.session_cache
    link = RedisLink(
        cache.redis_url, timeout=max(cache.redis_timeout, MIN_TIMEOUT), cluster=cache.redis_cluster
    )
    try:
        return rotate_in_redis(link)
    except REDIS_ERRORS as exc:
        raise RedisUnreachable(f"keys rotate: Redis did not answer: {exc}") from None
    finally:
        link.close()
