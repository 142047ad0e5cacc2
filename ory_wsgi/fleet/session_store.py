"""The fleet's shared session cache in Redis, behind each worker's memory cache.

    store = SharedSessionStore(link, ttl=10.0, negative_ttl=2.0, lock_timeout=3.5)
    memory_cache.shared = store
    store.revoke("<session id>")            # every cache in the fleet drops it

A miss of the memory cache reads Redis; on a miss there too, one worker of
the whole fleet takes a short lock (`SET NX PX`) and asks Ory, the others
poll Redis for its answer. A lock holder that dies stops blocking the others
when its lock expires (`lock_timeout`: Ory's timeout plus a margin); they
then ask Ory themselves.

What Redis holds (all under `ory_wsgi:v1:`, see `redis_link.KEY_PREFIX`).
Each key carries a hash tag (`{...}`) so that everything one script or
pipeline step touches lies in one hash slot of a Redis Cluster: tagged by the
credential digest, or by the session id.
- `s:{<digest>}`: the lookup, JSON, for `ttl` seconds and never past the
  session's `expires_at`; 401 answers for `negative_ttl`. `<digest>` is
  `Credentials.cache_key` in hex: a hash, never a cookie or a token;
- `gone:{<digest>}`: set for `ttl` when these credentials' session is
  revoked (or logged out), so an answer under way is not cached again;
- `lock:{<digest>}` and `done:<token>`: single-flight; `done` carries an
  answer that is not cached (an error, 429, aal2) to the waiters of that call;
- `sid:{<session id>}`: the digests cached for a session, so a revocation by
  session id finds them;
- `revoked:{<session id>}`: set for `ttl` by a revocation, so a whoami that
  was under way when the session was revoked is not indexed (nor cached) again;
- channel `revocations` (classic pub/sub, which a cluster delivers to
  subscribers on every node): `{"sid": ..., "keys": [digests]}` for every
  worker's `RevocationListener`.

Caching a session's lookup takes two steps, each atomic in its slot: index
the digest under the session id unless `revoked:{sid}` is set, then store the
lookup unless `gone:{digest}` is set. A revocation takes the same two in the
same order (mark the session revoked and empty its index, then mark each
digest gone and delete its lookup), so whichever way the two interleave, a
revoked session's lookup is not left in Redis.

Any Redis failure (down, or slower than `redis_timeout`) is reported to the
link and the request goes on with Ory directly; Ory is asked at most once
per request.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, get_args

from ory_wsgi.fleet.budget import WhoamiBudget
from ory_wsgi.fleet.redis_link import REDIS_ERRORS, LuaScript, RedisLink, tagged
from ory_wsgi.ory.cache import cache_lifetime
from ory_wsgi.ory.client import Credentials, Lookup, Outcome

if TYPE_CHECKING:
    from ory_wsgi.fleet.revocations import RevocationListener

CHANNEL = "revocations"
DONE_TTL_MS = 2000
_FIRST_POLL = 0.002
_MAX_POLL = 0.02

# Index a digest under its session id, unless the session was revoked (slot of {sid}).
_INDEX = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('SADD', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1
"""

# Cache a lookup unless its credentials were revoked meanwhile (slot of {digest}).
_PUT = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

# Mark a session revoked, empty its index, return the digests (slot of {sid}).
_REVOKE = """
redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
local digests = redis.call('SMEMBERS', KEYS[1])
redis.call('DEL', KEYS[1])
return digests
"""

# Mark credentials revoked and forget their lookup (slot of {digest}).
_FORGET = """
redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
return redis.call('DEL', KEYS[1])
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class SharedSessionStore:
    """The Redis tier: `get` (the memory cache's `SharedTier`), `revoke`, `revoke_digest`."""

    def __init__(
        self,
        link: RedisLink,
        *,
        ttl: float = 10.0,
        negative_ttl: float = 2.0,
        lock_timeout: float = 3.5,
        budget: WhoamiBudget | None = None,
    ) -> None:
        self.link = link
        self.ttl = ttl
        self.negative_ttl = negative_ttl if ttl > 0 else 0.0
        self.lock_timeout = lock_timeout
        self.budget = budget
        self.listener: RevocationListener | None = None
        self.channel = link.key(CHANNEL)
        self._revoked_ms = max(int(ttl * 1000), 1)
        self._index = LuaScript(link, _INDEX)
        self._put = LuaScript(link, _PUT)
        self._revoke = LuaScript(link, _REVOKE)
        self._forget = LuaScript(link, _FORGET)
        self._unlock = LuaScript(link, _RELEASE)

    def value_key(self, digest: str) -> str:
        return self.link.key("s", tagged(digest))

    def gone_key(self, digest: str) -> str:
        return self.link.key("gone", tagged(digest))

    def get(self, credentials: Credentials, fetch: Callable[[], Lookup]) -> Lookup:
        """The fleet's answer for these credentials; `fetch` (whoami) only when nobody has one."""
        listener = self.listener
        if listener is not None:
            listener.ensure_running()
        digest = credentials.cache_key.hex()
        if self.link.usable():
            try:
                raw = self.link.client.get(self.value_key(digest))
                cached = decode(raw) if raw else None
                if cached is None:
                    return self._single_flight(digest, fetch)
            except REDIS_ERRORS as exc:
                self.link.failed(exc)
            else:
                self.link.succeeded()
                return cached
        return self._ask(fetch)

    def revoke(self, session_id: str, digests: tuple[str, ...] = ()) -> int:
        """Drop a session from Redis and every worker's memory; the number of entries dropped.

        Raises one of `REDIS_ERRORS` when Redis cannot be reached: the caller
        must know the revocation did not happen.
        """
        link = self.link
        client = link.client
        dropped: list[str] = []
        if session_id:
            found = self._revoke(
                [link.key("sid", tagged(session_id)), link.key("revoked", tagged(session_id))],
                [self._revoked_ms],
            )
            dropped = [d.decode() if isinstance(d, bytes) else str(d) for d in found]
        every = [*dropped, *(d for d in digests if d not in dropped)]
        # One script per digest (a session has a digest or two): each runs on its
        # digest's node, and a cluster pipeline refuses scripts.
        for digest in every:
            self._forget([self.value_key(digest), self.gone_key(digest)], [self._revoked_ms])
        client.publish(self.channel, json.dumps({"sid": session_id, "keys": every}))
        return len(every)

    def revoke_digest(self, digest: bytes) -> None:
        """Revoke the session cached under these credentials (logout); never raises.

        While Redis is out there is nobody to tell: the logout does not wait for it.
        """
        if not self.link.usable():
            return
        hexdigest = digest.hex()
        try:
            raw = self.link.client.get(self.value_key(hexdigest))
            cached = decode(raw) if raw else None
            session = cached.session if cached is not None else None
            session_id = session.get("id") if session else None
            self.revoke(session_id if isinstance(session_id, str) else "", (hexdigest,))
        except REDIS_ERRORS as exc:
            self.link.failed(exc)
        else:
            self.link.succeeded()

    def _single_flight(self, digest: str, fetch: Callable[[], Lookup]) -> Lookup:
        lock_key = self.link.key("lock", tagged(digest))
        token = secrets.token_hex(8)
        lock_ms = max(int(self.lock_timeout * 1000), 1)
        deadline = time.monotonic() + self.lock_timeout
        while time.monotonic() < deadline:
            pipe = self.link.client.pipeline(transaction=False)
            pipe.set(lock_key, token, nx=True, px=lock_ms)
            pipe.get(lock_key)
            acquired, holder = pipe.execute()
            if acquired:
                return self._lead(digest, fetch, lock_key, token)
            answer = self._wait(digest, lock_key, holder, deadline)
            if answer is not None:
                return answer
        # The holder was lost: do not wait for it any longer.
        return self._lead(digest, fetch, None, token)

    def _wait(
        self, digest: str, lock_key: str, holder: bytes | None, deadline: float
    ) -> Lookup | None:
        """Poll for the lock holder's answer; None when its lock went without one."""
        if holder is None:
            return None  # released between our SET NX and GET: try to take it
        value_key = self.value_key(digest)
        done_key = self.link.key("done", holder.decode())
        pause = _FIRST_POLL
        while time.monotonic() < deadline:
            time.sleep(pause)
            pause = min(pause * 2, _MAX_POLL)
            pipe = self.link.client.pipeline(transaction=False)
            pipe.get(value_key)
            pipe.get(done_key)
            pipe.get(lock_key)
            value, done, current = pipe.execute()
            for raw in (value, done):
                answer = decode(raw) if raw else None
                if answer is not None:
                    return answer
            if current != holder:
                return None
        return None

    def _lead(
        self, digest: str, fetch: Callable[[], Lookup], lock_key: str | None, token: str
    ) -> Lookup:
        try:
            lookup = self._ask(fetch)
        except BaseException:
            self._release(lock_key, token)
            raise
        try:
            self._store(digest, lookup, token if lock_key else None)
        except REDIS_ERRORS as exc:
            self.link.failed(exc)
        self._release(lock_key, token)
        return lookup

    def _ask(self, fetch: Callable[[], Lookup]) -> Lookup:
        return fetch() if self.budget is None else self.budget.call(fetch)

    def _store(self, digest: str, lookup: Lookup, token: str | None) -> None:
        lifetime = cache_lifetime(lookup, self.ttl, self.negative_ttl)
        payload = encode(lookup)
        link = self.link
        stored = False
        if lifetime > 0:
            milliseconds = max(int(lifetime * 1000), 1)
            session_id = lookup.session.get("id") if lookup.session else None
            stored = True
            if isinstance(session_id, str) and session_id:
                revocable = [
                    link.key("sid", tagged(session_id)),
                    link.key("revoked", tagged(session_id)),
                ]
                stored = bool(self._index(revocable, [digest, milliseconds]))
            if stored:
                keys = [self.value_key(digest), self.gone_key(digest)]
                stored = bool(self._put(keys, [payload, milliseconds]))
        if not stored and token is not None:
            # Not to be cached, or revoked while Ory was being asked: answer this call's
            # waiters only.
            link.client.set(link.key("done", token), payload, px=DONE_TTL_MS)

    def _release(self, lock_key: str | None, token: str) -> None:
        if lock_key is None:
            return
        try:
            # Only our own lock: it may have expired and been taken by another worker.
            self._unlock([lock_key], [token])
        except REDIS_ERRORS as exc:
            self.link.failed(exc)


_FIELDS = tuple(f.name for f in dataclasses.fields(Lookup))
_OUTCOMES = frozenset(get_args(Outcome))


def encode(lookup: Lookup) -> bytes:
    return json.dumps(
        {name: getattr(lookup, name) for name in _FIELDS}, separators=(",", ":")
    ).encode()


def decode(raw: bytes | str) -> Lookup | None:
    """The lookup stored in Redis, or None for anything unexpected (treated as a miss)."""
    try:
        data: Any = json.loads(raw)
        if not isinstance(data, dict) or set(data) != set(_FIELDS):
            return None
        lookup = Lookup(**data)
    except (ValueError, TypeError):
        return None
    if lookup.outcome not in _OUTCOMES:
        return None
    if lookup.outcome == "authenticated" and not (
        isinstance(lookup.session, dict) and isinstance(lookup.subject, str)
    ):
        return None
    if lookup.expires_at is not None and lookup.expires_at <= time.time():
        return None
    return lookup
