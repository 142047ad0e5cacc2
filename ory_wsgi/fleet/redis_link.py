"""One worker's connection to Redis, and whether Redis may be asked right now.

    link = RedisLink("redis://127.0.0.1:6379/0", timeout=0.25)
    if link.usable():
        try:
            value = link.client.get(key)
        except REDIS_ERRORS as exc:
            link.failed(exc)

The client is chosen from the URL and `cluster`: `redis://`, `rediss://` and
`unix://` (one server), `redis+sentinel://` (the master the Sentinels name),
or with `cluster=True` a Redis Cluster reached through one or more seed nodes
(`redis[s]://[:password@]host:port[,host:port...]`). A cluster client is
built on first use, since building it asks the cluster for its slots; its
failures (`RedisClusterException`, which is not a `RedisError`) are in
`REDIS_ERRORS` like every other Redis fault. Every multi-key command and
script of the fleet names keys of one hash slot (see `tagged`), so the same
code runs on one server and on a cluster.

Every call is bounded by `timeout` (connect and read) and never retried: a
request waits at most that long for Redis before the memory cache and Ory are
used instead. After a failure Redis is left alone for `retry_interval` (5 s),
then one caller at a time tries again, so the shared cache is back within
15 s of Redis returning. Failures are logged at most once a minute; while
Redis is out, `degraded()` says why (the readiness endpoint reports it).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import NoScriptError, RedisClusterException
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
CLUSTER_SCHEMES = ("redis", "rediss")
REDIS_PORT = 6379

REDIS_ERRORS = (redis.RedisError, RedisClusterException)
"""What a Redis fault may raise: a cluster client also raises `RedisClusterException`
(no reachable node, a slot without a node), which is not a `RedisError`."""


def tagged(value: str) -> str:
    """`{value}`: a Redis Cluster hash tag. Keys that share it share a hash slot, so one
    script or multi-key command may name them all (on one server it changes nothing)."""
    return "{" + value + "}"


def redis_client(url: str, timeout: float) -> redis.Redis:
    """A client for `url`: `redis://`, `rediss://`, `unix://` (redis-py's `from_url`), or
    `redis+sentinel://[:password@]host[:port][,host[:port]...]/service[/db]`, which asks the
    Sentinels for the service's current master (and again after a failover)."""
    options = _options(timeout)
    # No retries: redis-py's default retries would multiply the time a
    # request can spend on a dead Redis.
    options["retry"] = Retry(NoBackoff(), 0)
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


def cluster_client(url: str, timeout: float) -> redis.Redis:
    """A Redis Cluster client for `redis[s]://[user:password@]host[:port][,host[:port]...][/0]`:
    the hosts are seed nodes, redis-py asks the first that answers for the others. It
    connects at once: raises `RedisClusterException` or a `RedisError` if no seed answers."""
    first, others = parse_cluster_url(url)
    cluster = RedisCluster.from_url(
        first,
        startup_nodes=[ClusterNode(host, port) for host, port in others],  # type: ignore[no-untyped-call]
        # No retries (see redis_client); the cluster client takes them as its own argument.
        retry=Retry(NoBackoff(), 0),
        **_options(timeout),
    )
    # The command methods are those of redis.Redis (redis-py's RedisClusterCommands).
    client: redis.Redis = cluster  # type: ignore[assignment]
    return client


def parse_cluster_url(url: str) -> tuple[str, list[tuple[str, int]]]:
    """(the URL of the first seed node, [(host, port)] of the others); ValueError if bad."""
    parts = urlsplit(url)
    if parts.scheme not in CLUSTER_SCHEMES:
        raise ValueError(f"a cluster needs a redis:// or rediss:// URL, got {parts.scheme!r}")
    if parts.path.strip("/") not in ("", "0"):
        raise ValueError("a cluster has only database 0")
    credentials, at, hosts = parts.netloc.rpartition("@")
    nodes = _nodes(hosts, REDIS_PORT, "cluster")
    host, port = nodes[0]
    netloc = f"{credentials}{at}{'[' + host + ']' if ':' in host else host}:{port}"
    first = urlunsplit((parts.scheme, netloc, "", parts.query, ""))
    return first, nodes[1:]


def _options(timeout: float) -> dict[str, Any]:
    return {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "health_check_interval": 0,
    }


def _nodes(hosts: str, default_port: int, what: str) -> list[tuple[str, int]]:
    nodes = []
    for node in hosts.split(","):
        host, _, port = node.rpartition(":")
        if not host or not port.isdigit():  # no port, or an IPv6 address without one
            host, port = node, str(default_port)
        if not host.strip("[]"):
            raise ValueError(f"no {what} host")
        nodes.append((host.strip("[]"), int(port)))
    return nodes


def parse_sentinel_url(url: str) -> tuple[str, int, str | None, list[tuple[str, int]]]:
    """(service, db, password, [(host, port)]) of a `redis+sentinel://` URL; ValueError if bad."""
    parts = urlsplit(url)
    credentials, _, hosts = parts.netloc.rpartition("@")
    password = unquote(credentials.partition(":")[2]) or None
    nodes = _nodes(hosts, SENTINEL_PORT, "sentinel")
    path = [piece for piece in parts.path.split("/") if piece]
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ValueError("expected /<service name>[/<db>] after the sentinels")
    return path[0], int(path[1]) if len(path) == 2 else 0, password, nodes


class RedisLink:
    """A redis-py client with its health: `usable()`, `failed()`, `succeeded()`, `degraded()`."""

    def __init__(
        self,
        url: str,
        timeout: float = 0.25,
        retry_interval: float = RETRY_INTERVAL,
        cluster: bool = False,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.retry_interval = retry_interval
        self.cluster = cluster
        self._client: redis.Redis | None = None
        try:
            if cluster:
                parse_cluster_url(url)
            else:
                self._client = redis_client(url, timeout)
        except ValueError as exc:
            raise ConfigError(f"[session_cache] redis_url: {exc}") from None
        self._down_since = 0.0
        self._retry_at = 0.0
        self._reason = ""
        self._last_logged = float("-inf")
        self._lock = threading.Lock()
        self._connect_lock = threading.Lock()

    @property
    def client(self) -> redis.Redis:
        """The client; a cluster's is built here the first time (raises `REDIS_ERRORS`)."""
        client = self._client
        if client is not None:
            return client
        with self._connect_lock:
            if self._client is None:
                if self._down_since and time.monotonic() < self._retry_at:
                    # Another caller just failed to reach the cluster: do not wait for it again.
                    raise redis.ConnectionError("no cluster node answered a moment ago")
                self._client = cluster_client(self.url, self.timeout)
            return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

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
            except REDIS_ERRORS as exc:
                self.failed(exc)
            else:
                self.succeeded()
        return self._reason

    def key(self, *parts: str) -> str:
        return KEY_PREFIX + ":".join(parts)


class LuaScript:
    """A Lua script run on the link's client by EVALSHA, sent whole once a server lacks it.

    (redis-py's `register_script` binds a client at once; a cluster's is built on first use.)
    """

    def __init__(self, link: RedisLink, source: str) -> None:
        self.link = link
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()  # noqa: S324 (Redis names scripts so)

    def __call__(self, keys: Sequence[str], args: Sequence[str | int | bytes] = ()) -> Any:
        client = self.link.client
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return client.eval(self.source, len(keys), *keys, *args)


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
        self._count = LuaScript(link, _COUNT)

    def __call__(self, window: int) -> int | None:
        link = self.link
        if not link.usable():
            return None
        try:
            used = int(self._count([link.key("budget", str(window))]))
        except REDIS_ERRORS as exc:
            link.failed(exc)
            return None
        link.succeeded()
        return used
