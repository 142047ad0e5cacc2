"""One worker's connection to Redis, and whether Redis may be asked right now.

    link = RedisLink("redis://127.0.0.1:6379/0", timeout=0.25)
    if link.usable():
        try:
            value = link.client.get(key)
        except RedisError as exc:
            link.failed(exc)

Every call is bounded by `timeout` (connect and read) and never retried: a
request waits at most that long for Redis before the memory cache and Ory are
used instead. After a failure Redis is left alone for `retry_interval` (5 s),
then one caller at a time tries again, so the shared cache is back within
15 s of Redis returning. Failures are logged at most once a minute; while
Redis is out, `degraded()` says why (the readiness endpoint reports it).
"""

from __future__ import annotations

import logging
import threading
import time
from urllib.parse import unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from ory_wsgi.errors import ConfigError

log = logging.getLogger("ory_wsgi.fleet")

RETRY_INTERVAL = 5.0
LOG_INTERVAL = 60.0
KEY_PREFIX = "ory_wsgi:v1:"
"""Every key and channel in Redis starts with this; the version changes with the value format."""
SENTINEL_SCHEME = "redis+sentinel"
SENTINEL_PORT = 26379


def redis_client(url: str, timeout: float) -> redis.Redis:
    """A client for `url`: `redis://`, `rediss://`, `unix://` (redis-py's `from_url`), or
    `redis+sentinel://[:password@]host[:port][,host[:port]...]/service[/db]`, which asks the
    Sentinels for the service's current master (and again after a failover)."""
    # No retries: redis-py's default retries would multiply the time a
    # request can spend on a dead Redis.
    options = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 0,
    }
    if not url.startswith(SENTINEL_SCHEME + "://"):
        return redis.Redis.from_url(url, **options)
    service, db, password, nodes = parse_sentinel_url(url)
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        nodes,
        sentinel_kwargs={"socket_timeout": timeout, "socket_connect_timeout": timeout},
        **options,
    )
    client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        service, db=db, password=password
    )
    return client


def parse_sentinel_url(url: str) -> tuple[str, int, str | None, list[tuple[str, int]]]:
    """(service, db, password, [(host, port)]) of a `redis+sentinel://` URL; ValueError if bad."""
    parts = urlsplit(url)
    credentials, _, hosts = parts.netloc.rpartition("@")
    password = unquote(credentials.partition(":")[2]) or None
    nodes = []
    for node in hosts.split(","):
        host, _, port = node.rpartition(":")
        if not host or not port.isdigit():  # no port, or an IPv6 address without one
            host, port = node, str(SENTINEL_PORT)
        if not host:
            raise ValueError("no sentinel host")
        nodes.append((host.strip("[]"), int(port)))
    path = [piece for piece in parts.path.split("/") if piece]
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ValueError("expected /<service name>[/<db>] after the sentinels")
    return path[0], int(path[1]) if len(path) == 2 else 0, password, nodes


class RedisLink:
    """A redis-py client with its health: `usable()`, `failed()`, `succeeded()`, `degraded()`."""

    def __init__(
        self, url: str, timeout: float = 0.25, retry_interval: float = RETRY_INTERVAL
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.retry_interval = retry_interval
        try:
            self.client = redis_client(url, timeout)
        except ValueError as exc:
            raise ConfigError(f"[session_cache] redis_url: {exc}") from None
        self._down_since = 0.0
        self._retry_at = 0.0
        self._reason = ""
        self._last_logged = float("-inf")
        self._lock = threading.Lock()

    def usable(self) -> bool:
        """May a request ask Redis now? While it is out, one caller per interval probes it."""
        if not self._down_since:
            return True
        with self._lock:
            now = time.monotonic()
            if now < self._retry_at:
                return False
            self._retry_at = now + self.retry_interval
            return True

    def failed(self, exc: BaseException) -> None:
        """Redis did not answer in time: leave it alone for a while, say so once a minute."""
        now = time.monotonic()
        with self._lock:
            if not self._down_since:
                self._down_since = now
            self._retry_at = now + self.retry_interval
            self._reason = f"redis_unavailable: {type(exc).__name__}: {str(exc)[:160]}"
            report = now - self._last_logged >= LOG_INTERVAL
            if report:
                self._last_logged = now
        if report:
            log.error(
                "%s; using the memory cache, trying Redis again every %gs",
                self._reason,
                self.retry_interval,
                extra={"fields": {"error": "redis_unavailable"}},
            )

    def succeeded(self) -> None:
        if self._down_since:
            with self._lock:
                was_down = self._down_since
                self._down_since = 0.0
                self._reason = ""
            if was_down:
                log.warning(
                    "redis is back after %.1fs; the shared cache is in use again",
                    time.monotonic() - was_down,
                )

    def degraded(self) -> str:
        """ "" when Redis is in use, else why not (for readiness); probes a Redis that is due."""
        if self._down_since and self.usable():
            try:
                self.client.ping()
            except redis.RedisError as exc:
                self.failed(exc)
            else:
                self.succeeded()
        return self._reason

    def key(self, *parts: str) -> str:
        return KEY_PREFIX + ":".join(parts)


# One round trip: count this call in the current second's window.
_COUNT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], 2000) end
return n
"""


class RedisWindowCounter:
    """The budget's shared count: calls in one epoch second, all workers and hosts together."""

    def __init__(self, link: RedisLink) -> None:
        self.link = link
        self._count = link.client.register_script(_COUNT)

    def __call__(self, window: int) -> int | None:
        link = self.link
        if not link.usable():
            return None
        try:
            used = int(self._count(keys=[link.key("budget", str(window))]))
        except redis.RedisError as exc:
            link.failed(exc)
            return None
        link.succeeded()
        return used
