"""Each worker's subscriber to the fleet's revocations: drops revoked sessions from its memory.

    listener = RevocationListener(link, store.channel, memory_cache)
    store.listener = listener       # started by the worker's first cache miss

One daemon thread per worker process, started lazily and again after a fork
(gunicorn `--preload` forks after `make_app`; threads do not survive a fork).
A message names the credential digests to drop, which `SessionCache.drop_key`
forgets (and a whoami under way for them is not kept). While the thread is
cut off from Redis it cannot hear revocations, so on every (re)subscription
it clears the memory cache: entries kept while deaf are not trusted.

On a Redis Cluster the subscription is redis-py's `ClusterPubSub` on the node
that owns the channel's slot; classic `PUBLISH` reaches subscribers on every
node, so it does not matter which node a publisher talks to. (Sharded pub/sub
would spare the cluster bus, but revocations are rare and classic pub/sub works
the same on one server, a Sentinel master and a cluster.)
"""

from __future__ import annotations

import json
import logging
import os
import threading

from redis.exceptions import RedisError

from ory_wsgi.fleet.redis_link import REDIS_ERRORS, RedisLink
from ory_wsgi.ory.cache import SessionCache

log = logging.getLogger("ory_wsgi.fleet")

RECONNECT_PAUSE = 0.5


class RevocationListener:
    """Subscribe to `channel` in a daemon thread; drop each named digest from `memory`."""

    def __init__(self, link: RedisLink, channel: str, memory: SessionCache) -> None:
        self.link = link
        self.channel = channel
        self.memory = memory
        self.subscribed = threading.Event()
        self._stopped = threading.Event()
        self._pid = 0
        self._lock = threading.Lock()

    def ensure_running(self) -> None:
        """Start the thread in this process unless it runs already (cheap: one comparison)."""
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            self.subscribed = threading.Event()
            thread = threading.Thread(target=self._run, name="ory-wsgi-revocations", daemon=True)
            thread.start()
            self._pid = os.getpid()

    def stop(self) -> None:
        """End the thread within a second (tests, embedding apps that shut down)."""
        self._stopped.set()

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                self._listen()
            except (*REDIS_ERRORS, OSError) as exc:
                self.subscribed.clear()
                self.link.failed(exc)
            except Exception:  # a bad message must not end revocations for this worker
                log.exception("revocation listener failed; subscribing again")
                self.subscribed.clear()
            self._stopped.wait(RECONNECT_PAUSE)

    def _listen(self) -> None:
        pubsub = self.link.client.pubsub()  # type: ignore[no-untyped-call]
        try:
            pubsub.subscribe(self.channel)
            confirmed = pubsub.get_message(timeout=self.link.timeout)
            if confirmed is None or confirmed.get("type") != "subscribe":
                raise RedisError(f"no answer to SUBSCRIBE within {self.link.timeout:g}s")
            self.memory.clear()
            self.subscribed.set()
            self.link.succeeded()
            while not self._stopped.is_set():
                message = pubsub.get_message(timeout=1.0)
                if message is not None and message.get("type") == "message":
                    self._drop(message["data"])
        finally:
            pubsub.close()

    def _drop(self, data: bytes | str) -> None:
        try:
            keys = json.loads(data)["keys"]
            digests = [bytes.fromhex(key) for key in keys]
        except (ValueError, KeyError, TypeError):
            log.warning("revocation message ignored: not {'sid', 'keys'} JSON")
            return
        for digest in digests:
            self.memory.drop_key(digest)
