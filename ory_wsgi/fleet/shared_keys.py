"""The JWT key set kept in Redis (`[jwt] keys_backend = "redis"`): every host signs with it.

    keys = RedisKeySet(link, state_dir=".ory-wsgi", seed_file="")
    rotate_in_redis(link)          # ory-wsgi keys rotate -c ory.toml

The private JWK set lives under `ory_wsgi:v1:jwks`. The first worker of the
fleet to start puts one there (the `seed_file` if given, else
`<state_dir>/jwks.json` if it exists, else a new key; `SET NX`, so
concurrent starts agree on one). Each worker reads it again every
`check_interval` (3 s) on the signing path, so a rotation is in use on every
worker within seconds and `/.ory/jwks.json` is the same everywhere.

Redis out: the keys in memory stay in use. A worker that starts while Redis
is out uses its last copy (`<state_dir>/jwks-redis.json`, mode 0600, written
on every change); without one it refuses to start. Whoever can read this
Redis can sign tokens: protect it as you would the key file.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from ory_wsgi.errors import ConfigError
from ory_wsgi.fleet.redis_link import REDIS_ERRORS, LuaScript, RedisLink
from ory_wsgi.keys import (
    CHECK_INTERVAL,
    DEFAULT_FILE_NAME,
    KeyMaterial,
    KeySet,
    key_material,
    new_key_set,
    rotated_key_set,
)

log = logging.getLogger("ory_wsgi.keys")

COPY_FILE_NAME = "jwks-redis.json"


class RedisKeySet(KeySet):
    """A `KeySet` whose document is read from Redis instead of a file."""

    _reloaded_message = "key set reloaded from Redis"

    def __init__(
        self,
        link: RedisLink,
        state_dir: str,
        seed_file: str = "",
        check_interval: float = CHECK_INTERVAL,
    ) -> None:
        self.link = link
        self.redis_key = link.key("jwks")
        self.path = f"redis {self.redis_key}"
        self.check_interval = check_interval
        self.copy_path = os.path.join(state_dir or ".", COPY_FILE_NAME)
        self.state_dir = state_dir or "."
        self._reload_lock = threading.Lock()
        document = self._first_document(seed_file)
        self.material = key_material(self.path, document)
        self._document = document
        self._keep_copy(document)
        self._next_check = time.monotonic() + check_interval

    def _read_if_changed(self) -> KeyMaterial | None:
        """The key set in Redis when it changed since the last read (`KeySet.reload_if_changed`
        throttles and locks); None if unchanged, unusable or Redis is out."""
        if not self.link.usable():
            return None
        try:
            document = self.link.client.get(self.redis_key)
        except REDIS_ERRORS as exc:
            self.link.failed(exc)
            return None
        self.link.succeeded()
        if not isinstance(document, bytes) or document == self._document:
            return None
        try:
            material = key_material(self.path, document)
        except ConfigError as error:
            log.warning("key set in Redis not loaded, keeping the current keys: %s", error)
            return None
        self._document = document
        self._keep_copy(document)
        return material

    def _first_document(self, seed_file: str) -> bytes:
        try:
            client = self.link.client
            document = client.get(self.redis_key)
            if not document:
                client.set(self.redis_key, self._seed(seed_file), nx=True)
                document = client.get(self.redis_key)
        except REDIS_ERRORS as exc:
            try:
                with open(self.copy_path, "rb") as file:
                    copy = file.read()
            except OSError:
                raise ConfigError(
                    f'[jwt] keys_backend = "redis": cannot read the key set from Redis '
                    f"({type(exc).__name__}: {exc}) and there is no copy at {self.copy_path}"
                ) from None
            log.warning("Redis unreachable at start (%s): signing with %s", exc, self.copy_path)
            return copy
        if not isinstance(document, bytes):
            raise ConfigError(f"{self.path}: the key set vanished while starting")
        return document

    def _seed(self, seed_file: str) -> bytes:
        candidate = seed_file or os.path.join(self.state_dir, DEFAULT_FILE_NAME)
        if os.path.exists(candidate):
            with open(candidate, "rb") as file:
                document = file.read()
            key_material(candidate, document)
            log.info("key set in Redis seeded from %s", candidate)
            return document
        return new_key_set()

    def _keep_copy(self, document: bytes) -> None:
        directory = os.path.dirname(os.path.abspath(self.copy_path))
        temporary = f"{self.copy_path}.{os.getpid()}.tmp"
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "wb") as file:
                file.write(document)
            os.replace(temporary, self.copy_path)
        except OSError as error:
            log.warning("cannot keep a copy of the key set at %s: %s", self.copy_path, error)


# Replace the key set only if nobody changed it since we read it (one key: any slot).
_SWAP = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""


def rotate_in_redis(link: RedisLink) -> str:
    """Put a new signing key first in the key set in Redis, keep the old ones; the new kid.

    Raises `ConfigError` when there is no key set in Redis yet, one of
    `REDIS_ERRORS` when Redis cannot be reached. A compare-and-set script
    rather than WATCH/MULTI, which a cluster client does not offer everywhere.
    """
    key = link.key("jwks")
    swap = LuaScript(link, _SWAP)
    while True:
        document = link.client.get(key)
        if not isinstance(document, bytes):
            raise ConfigError(f"{key}: no key set in Redis yet; start the proxy once to create it")
        rotated, kid = rotated_key_set(f"redis {key}", document)
        if swap([key], [document, rotated]):
            return kid
