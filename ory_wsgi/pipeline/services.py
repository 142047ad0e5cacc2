"""What handlers share: built once in make_app (or the middleware), handed to every handler.

Handler classes are constructed as `cls(services)`; they keep what they need
from it. Nothing here is per request, and nothing is built twice: the Ory
client, the session cache and the key set are the ones the rest of the
process uses (the logout endpoint drops sessions from the same cache).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ory_wsgi.keys import KeySet
from ory_wsgi.ory.cache import SessionCache
from ory_wsgi.ory.client import OryClient
from ory_wsgi.ory.rewrite import OryRewriter
from ory_wsgi.pipeline.decision_cache import DecisionCache
from ory_wsgi.settings import Settings

V = TypeVar("V")


@dataclass(frozen=True)
class Services:
    """`keys` is None with `[jwt] enabled = false`; `client`/`cache` None without an Ory URL.

    `public_url` is where users reach us (no trailing slash): login redirects and
    `return_to` are built from it, never from Host. `rewriter` maps Ory's own URLs
    in a session onto `<public_url>/.ory` (the JWT's session claim shows what the
    browser sees).
    """

    settings: Settings
    public_url: str
    keys: KeySet | None
    client: OryClient | None
    cache: SessionCache | None
    cookie_names: frozenset[str]
    rewriter: OryRewriter | None = None

    def decision_cache(
        self,
        name: str,
        lifetime: Callable[[V], float],
        max_entries: int = 10000,
        encode: Callable[[V], Any] | None = None,
        decode: Callable[[Any], V] | None = None,
    ) -> DecisionCache[V]:
        """The cache a handler keeps a service's answers in, built once per handler.

        `name` says whose answers they are ("ory_permissions", "oauth2_introspection"):
        every handler asks here, so one place decides where answers live. With the
        memory backend, this worker's memory. With `[session_cache] backend = "redis"`,
        the fleet's Redis behind this worker's memory, which keeps an answer at most
        `memory_ttl` (ory_wsgi.fleet.shared_answers). Answers stored in Redis are JSON:
        `encode` turns an answer into what `json.dumps` takes and `decode` back (both
        default to the answer itself), so a dataclass answer passes both. Keys must
        have the same `repr` in every process (tuples of strings). `clear()` empties
        this worker's memory only: answers that a change (a new signing key) makes
        wrong must be keyed by what changed (the key id), not cleared.
        """
        from ory_wsgi.fleet.wiring import answer_tier

        shared = answer_tier(self.settings, self.cache, name, lifetime, encode, decode)
        if shared is None:
            return DecisionCache(lifetime, max_entries=max_entries)
        memory_ttl = self.settings.session_cache.memory_ttl
        return DecisionCache(lifetime, max_entries, shared=shared, memory_ttl=memory_ttl)
