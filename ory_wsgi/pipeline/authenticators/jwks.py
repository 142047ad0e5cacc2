"""JSON Web Key Sets for the `jwt` authenticator: fetched once per worker, refreshed, served stale.

    sources = JwksSources()                                  # one per jwt authenticator
    source = sources.get(url, ttl=30, max_wait=1, min_refresh=5)   # at load, per rule
    keys = source.lookup(kid)            # per request: the keys published under kid, maybe ()
    keys = source.refresh_for(kid)       # an unknown kid: fetch again (rate-limited), look again

A source is an `http(s)://` URL (fetched with GET over a pooled connection, no
redirects followed, at most 1 MiB, `max_wait` for the connection and for each
read) or a `file://` path (`file:///abs/jwks.json`, or `file://rel/jwks.json`
relative to the working directory). Rules naming the same URL with the same
timings share one source, so it is fetched once per worker whatever the number
of rules.

- First use: the request that needs the keys fetches them; the others wait for
  that fetch (single-flight). No key set yet (the fetch failed):
  `KeysUnavailable`, and the next attempt waits `min_refresh` seconds, so an
  outage is not hammered.
- Every `ttl` seconds the keys are fetched again by one request (the others go on
  with the keys they have). A fetch that fails keeps the keys already loaded
  (stale keys served, one log line per failed fetch) and is tried again after
  `min_refresh`.
- A `kid` not in the set fetches again at once (a key rotation), but at most once
  per `min_refresh` seconds per source: a flood of made-up kids costs one fetch.
Members without a `kid`, of an unknown `kty`, or that joserfc cannot import are
skipped; a document that is not a JWK set fails the fetch.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from urllib.parse import unquote, urlsplit

from joserfc.errors import JoseError
from joserfc.jwk import JWKRegistry, Key

from ory_wsgi.errors import ConfigError, UpstreamError
from ory_wsgi.upstream.pool import UpstreamPool

log = logging.getLogger("ory_wsgi.pipeline")

MAX_JWKS_BYTES = 1024 * 1024
KeysByKid = Mapping[str, tuple[Key, ...]]


class KeysUnavailable(Exception):
    """No key set has been loaded from this source yet (its fetch failed)."""


class FetchFailed(Exception):
    """One fetch of a key set failed; the reason is logged."""


def check_url(url: object, where: str) -> str:
    """`url` if it is an http(s) URL with a host or a file:// URL with a path; ConfigError else."""
    if not isinstance(url, str) or not url:
        raise ConfigError(f"{where}: jwks_urls must be a list of URLs, got {url!r}")
    split = urlsplit(url)
    if split.scheme in ("http", "https") and split.hostname:
        return url
    if split.scheme == "file" and (split.netloc or split.path):
        return url
    raise ConfigError(f"{where}: jwks_urls: {url!r} is not an http(s):// or file:// URL")


class JwksSource:
    """One JWKS URL's keys in this worker; thread-safe."""

    def __init__(
        self,
        url: str,
        read: Callable[[], bytes],
        *,
        ttl: float,
        max_wait: float,
        min_refresh: float,
    ) -> None:
        self.url = url
        self._read = read
        self.ttl = ttl
        self.min_refresh = min_refresh
        # Waiting for another thread's fetch: its connect and read timeouts, and some slack.
        self._wait = 3 * max_wait + 1.0
        self._keys: KeysByKid | None = None
        self._due = 0.0  # when the keys are fetched again (monotonic)
        self._last_attempt = -math.inf
        self._generation = 0
        self._lock = threading.Lock()
        self.fetches = 0  # fetches attempted, for tests

    @property
    def loaded(self) -> bool:
        return self._keys is not None

    def lookup(self, kid: str) -> tuple[Key, ...]:
        """The keys published under `kid` (maybe none); `KeysUnavailable` before any loaded."""
        keys = self._keys
        now = time.monotonic()
        if keys is None:
            self._refresh(now, wait=True)
            keys = self._keys
            if keys is None:
                raise KeysUnavailable(self.url)
        elif now >= self._due and self._refresh(now, wait=False):
            # Never None once loaded; an empty set (every key retired) is a set too.
            keys = self._keys if self._keys is not None else keys
        return keys.get(kid, ())

    def refresh_for(self, kid: str) -> tuple[Key, ...]:
        """An unknown `kid`: fetch again unless one was tried in the last `min_refresh` s."""
        if self._refresh(time.monotonic(), wait=True) and self._keys is not None:
            return self._keys.get(kid, ())
        return ()

    def _refresh(self, now: float, *, wait: bool) -> bool:
        """Fetch the set again; True when this or another thread fetched since `now`."""
        generation = self._generation
        # A fetch under way is waited for (single-flight); otherwise at most one per min_refresh.
        if not self._lock.locked() and now - self._last_attempt < self.min_refresh:
            return False
        acquired = self._lock.acquire(timeout=self._wait) if wait else self._lock.acquire(False)
        if not acquired:
            return False
        try:
            if self._generation != generation:
                return True  # a fetch finished while this thread waited for it
            started = time.monotonic()
            if started - self._last_attempt < self.min_refresh:
                return False
            self._last_attempt = started
            self.fetches += 1
            try:
                keys = parse_jwks(self._read(), self.url)
            except FetchFailed as exc:
                self._due = started + self.min_refresh
                if self._keys is None:
                    log.error("jwt: the JWKS at %s could not be loaded: %s", self.url, exc)
                else:
                    log.warning(
                        "jwt: the JWKS at %s could not be refreshed (%s); the keys loaded "
                        "before stay in use",
                        self.url,
                        exc,
                    )
                return False
            finally:
                self._generation += 1
            self._keys = keys
            self._due = started + self.ttl
            return True
        finally:
            self._lock.release()


def parse_jwks(data: bytes, url: str) -> KeysByKid:
    """The keys of a JWK set document by kid; `FetchFailed` when it is not a JWK set."""
    try:
        document = json.loads(data)
    except ValueError:
        raise FetchFailed("the answer is not JSON") from None
    members = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(members, list):
        raise FetchFailed('the answer is not a JWK set (no "keys" list)')
    by_kid: dict[str, list[Key]] = {}
    skipped = 0
    for member in members:
        kid = member.get("kid") if isinstance(member, dict) else None
        if not isinstance(kid, str) or not kid:
            skipped += 1
            continue
        try:
            key = JWKRegistry.import_key(member)
        except (JoseError, ValueError, TypeError, KeyError, AttributeError):
            skipped += 1
            continue
        by_kid.setdefault(kid, []).append(key)
    if skipped:
        log.warning("jwt: the JWKS at %s has %d key(s) that cannot be used; skipped", url, skipped)
    return {kid: tuple(keys) for kid, keys in by_kid.items()}


def http_reader(url: str, timeout: float) -> Callable[[], bytes]:
    split = urlsplit(url)
    pool = UpstreamPool(
        f"{split.scheme}://{split.netloc}", connect_timeout=timeout, read_timeout=timeout, maxsize=2
    )
    target = (split.path or "/") + (f"?{split.query}" if split.query else "")
    headers = {"Host": split.netloc, "Accept": "application/json"}

    def read() -> bytes:
        try:
            response = pool.request("GET", target, headers)
        except UpstreamError as exc:
            raise FetchFailed(f"unreachable ({exc})") from None
        try:
            if response.status != 200:
                raise FetchFailed(f"answered {response.status}")
            parts, size = [], 0
            while chunk := response.read1():
                size += len(chunk)
                if size > MAX_JWKS_BYTES:
                    raise FetchFailed(f"the answer is larger than {MAX_JWKS_BYTES} bytes")
                parts.append(chunk)
            return b"".join(parts)
        except UpstreamError as exc:
            raise FetchFailed(f"the answer broke off ({exc})") from None
        finally:
            # Gives a fully read connection back to the pool, drops any other.
            response.release()

    return read


def file_reader(url: str) -> Callable[[], bytes]:
    split = urlsplit(url)
    # file:///abs/path, or Oathkeeper's file://relative/path
    path = unquote(split.netloc + split.path)

    def read() -> bytes:
        try:
            with open(path, "rb") as file:
                data = file.read(MAX_JWKS_BYTES + 1)
        except OSError as exc:
            raise FetchFailed(f"cannot read {path}: {exc.strerror or exc}") from None
        if len(data) > MAX_JWKS_BYTES:
            raise FetchFailed(f"{path} is larger than {MAX_JWKS_BYTES} bytes")
        return data

    return read


class JwksSources:
    """The sources of one jwt authenticator, by URL and timings: shared by every rule."""

    def __init__(self) -> None:
        self._sources: dict[tuple[str, float, float, float], JwksSource] = {}
        self._lock = threading.Lock()

    def get(self, url: str, *, ttl: float, max_wait: float, min_refresh: float) -> JwksSource:
        key = (url, ttl, max_wait, min_refresh)
        with self._lock:
            source = self._sources.get(key)
            if source is None:
                local = urlsplit(url).scheme == "file"
                read = file_reader(url) if local else http_reader(url, max_wait)
                source = JwksSource(url, read, ttl=ttl, max_wait=max_wait, min_refresh=min_refresh)
                self._sources[key] = source
            return source
