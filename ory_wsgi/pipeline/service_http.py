"""Calling a decision service (Hydra, an OAuth2 token endpoint) over pooled HTTP connections.

    pools = ServicePools()                                       # one per handler instance
    endpoint = pools.endpoint("http://hydra:4445/admin/oauth2/introspect", 0.5, where)  # load
    reply = endpoint.post(body, {"Content-Type": "..."}, give_up_after=1.0)  # per request

`endpoint(url, timeout, where)` checks the URL once at load (http(s), a host, no
fragment; a `ConfigError` naming `where` otherwise) and shares one
`UpstreamPool` per origin and timeout among every rule of the handler, so
connections are kept alive across requests and rules. `post` sends a small
body and reads a small answer whole: a connection failure or a timeout
(`timeout`, each attempt) is retried until `give_up_after` seconds have
passed, then raised as `UpstreamError`; an answer larger than `max_answer`
comes back with `body = None` and its connection dropped. Nothing here
decides: the caller maps the status (and fails closed).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from ory_wsgi.errors import ConfigError, UpstreamError
from ory_wsgi.upstream_pool import UpstreamPool

MAX_ANSWER = 64 * 1024
RETRY_PAUSE = 0.05


@dataclass(frozen=True, slots=True)
class Reply:
    """A service's answer: `headers` by lower-case name; `body` None when it was too large."""

    status: int
    headers: dict[str, str]
    body: bytes | None

    def header(self, name: str) -> str:
        return self.headers.get(name, "")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One URL of a service, with the pool of its origin."""

    url: str
    pool: UpstreamPool
    target: str
    host: str

    def post(
        self,
        body: bytes,
        headers: dict[str, str],
        *,
        give_up_after: float,
        max_answer: int = MAX_ANSWER,
    ) -> Reply:
        sent = {"Host": self.host, "Content-Length": str(len(body)), **headers}
        deadline = time.monotonic() + give_up_after
        while True:
            try:
                response = self.pool.request("POST", self.target, sent, body)
                break
            except UpstreamError:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise
                time.sleep(min(RETRY_PAUSE, left))
        answered = {name.lower(): value for name, value in response.headers}
        data: bytes | None = b""
        try:
            chunks: list[bytes] = []
            size = 0
            while chunk := response.read1():
                size += len(chunk)
                if size > max_answer:
                    data = None
                    break
                chunks.append(chunk)
            else:
                data = b"".join(chunks)
        finally:
            # A fully read answer gives its connection back to the pool; any other is dropped.
            response.release()
        return Reply(response.status, answered, data)


class ServicePools:
    """`UpstreamPool`s by origin and timeout, built at load and shared by a handler's rules."""

    def __init__(self, maxsize: int = 16) -> None:
        self.maxsize = maxsize
        self._pools: dict[tuple[str, float], UpstreamPool] = {}
        self._lock = threading.Lock()

    def endpoint(self, url: str, timeout: float, where: str) -> Endpoint:
        split = urlsplit(url)
        if split.scheme not in ("http", "https") or not split.hostname or split.fragment:
            raise ConfigError(f"{where} must be an http(s) URL, got {url!r}")
        origin = f"{split.scheme}://{split.netloc}"
        with self._lock:
            pool = self._pools.get((origin, timeout))
            if pool is None:
                pool = UpstreamPool(
                    origin, connect_timeout=timeout, read_timeout=timeout, maxsize=self.maxsize
                )
                self._pools[(origin, timeout)] = pool
        target = (split.path or "/") + (f"?{split.query}" if split.query else "")
        return Endpoint(url, pool, target, split.netloc)
