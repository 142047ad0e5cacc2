"""The ES256 key set: load (JWK set or PEM), generate, rotate, publish as JWKS.

The first key signs; every key is published, so tokens signed before a
rotation keep verifying until they expire.

A key file must be private, as ssh and PostgreSQL want theirs: owned by the
user the process runs as and neither readable nor writable by group or
others (0600), or owned by root with no access for others and no group
write (0640: a Kubernetes secret with `fsGroup`). A pre-existing state
directory must not be writable by group or others. Anything else is refused
with one line that says how to fix the permissions.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import shlex
import stat
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import ECKey

from ory_wsgi.errors import ConfigError

log = logging.getLogger("ory_wsgi.keys")

ALGORITHM = "ES256"
CURVE = "P-256"
DEFAULT_FILE_NAME = "jwks.json"
# How often a worker looks at the key file for a rotation; a stat is cheap, but
# not per request.
CHECK_INTERVAL = 3.0
PUBLIC_MEMBERS = ("kty", "crv", "x", "y", "kid")


@dataclass(frozen=True)
class KeyMaterial:
    """One loaded version of the key file; replaced whole when the file changes."""

    keys: tuple[ECKey, ...]
    jwks: bytes

    @property
    def signing_key(self) -> ECKey:
        return self.keys[0]

    @property
    def kid(self) -> str:
        return str(self.keys[0].kid)


class KeySet:
    """The EC P-256 keys of this proxy, read from one file and re-read when it changes."""

    _reloaded_message = "key file reloaded"

    def __init__(self, path: str, check_interval: float = CHECK_INTERVAL) -> None:
        self.path = path
        self.check_interval = check_interval
        self._signature = _file_signature(path)
        self.material = _read_material(path)
        self._next_check = time.monotonic() + check_interval
        self._reload_lock = threading.Lock()

    @classmethod
    def load(cls, path: str, check_interval: float = CHECK_INTERVAL) -> KeySet:
        """Read a JWK set or a PEM EC P-256 private key; `ConfigError` if unusable."""
        return cls(os.fspath(path), check_interval)

    @classmethod
    def ensure(
        cls, keys_file: str, state_dir: str, check_interval: float = CHECK_INTERVAL
    ) -> KeySet:
        """`keys_file` if set, else `<state_dir>/jwks.json`, generated once if absent.

        Safe when several workers start at once: the first to link its file
        in place wins and the others read that file.
        """
        if keys_file:
            return cls.load(keys_file, check_interval)
        state_dir = state_dir or "."
        _make_private_dir(state_dir)
        path = os.path.join(state_dir, DEFAULT_FILE_NAME)
        if not os.path.exists(path):
            try:
                _link_new_file(path, _serialise_private([_generate_key()]))
            except FileExistsError:
                pass
        return cls.load(path, check_interval)

    @property
    def signing_key(self) -> ECKey:
        return self.material.signing_key

    @property
    def signing_kid(self) -> str:
        return self.material.kid

    @property
    def kids(self) -> tuple[str, ...]:
        return tuple(str(key.kid) for key in self.material.keys)

    def jwks_document(self) -> bytes:
        """The public JWKS, the same bytes in every worker for the same key file."""
        self.reload_if_changed()
        return self.material.jwks

    def reload_if_changed(self) -> bool:
        """Re-read the key file if it changed on disk; True when new keys were loaded.

        Looks at the file at most every `check_interval` seconds. A file that
        no longer loads is logged and the keys in memory stay in use.
        """
        if time.monotonic() < self._next_check:
            return False
        if not self._reload_lock.acquire(blocking=False):
            return False
        try:
            self._next_check = time.monotonic() + self.check_interval
            material = self._read_if_changed()
            if material is None:
                return False
            changed = material != self.material
            self.material = material
            if changed:
                log.info(self._reloaded_message, extra={"fields": {"kid": material.kid}})
            return changed
        finally:
            self._reload_lock.release()

    def _read_if_changed(self) -> KeyMaterial | None:
        """The keys when the file changed since the last read; None if unchanged or unusable.

        The source-specific half of `reload_if_changed` (`RedisKeySet` reads Redis instead);
        called under the reload lock, at most every `check_interval`.
        """
        try:
            signature = _file_signature(self.path)
            if signature == self._signature:
                return None
            material = _read_material(self.path)
        except ConfigError as error:
            log.warning("key file not reloaded, keeping the current keys: %s", error)
            return None
        self._signature = signature
        return material


def generate_key_set_file(path: str) -> str:
    """Write a new key set (one key, mode 0600) to `path`; returns its kid.

    Refuses to overwrite: an existing file raises `ConfigError`.
    """
    key = _generate_key()
    try:
        _link_new_file(path, _serialise_private([key]))
    except FileExistsError:
        raise ConfigError(
            f"{path}: already exists; use `ory-wsgi keys rotate {path}` to add a key"
        ) from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot write key file: {_one_line(error)}") from None
    return str(key.kid)


def rotate_key_set_file(path: str) -> str:
    """Put a new signing key first in the JWK set at `path`, keep the others; returns its kid."""
    document, kid = rotated_key_set(path, _read_bytes(path))
    directory = os.path.dirname(os.path.abspath(path))
    try:
        temporary = _write_temporary(directory, document)
        os.replace(temporary, path)
    except OSError as error:
        raise ConfigError(f"{path}: cannot write key file: {_one_line(error)}") from None
    return kid


def new_key_set() -> bytes:
    """A new private JWK set document with one key (for a store other than a file)."""
    return _serialise_private([_generate_key()])


def rotated_key_set(source: str, document: bytes) -> tuple[bytes, str]:
    """`document` with a new signing key first and the old keys kept; and the new kid."""
    if document.lstrip().startswith(b"-----"):
        raise ConfigError(f"{source}: is a PEM key; rotation needs a JWK set (keys generate)")
    keys = key_material(source, document).keys
    key = _generate_key()
    return _serialise_private([key, *keys]), str(key.kid)


def _generate_key() -> ECKey:
    key = ECKey.generate_key(CURVE, parameters={"use": "sig", "alg": ALGORITHM})
    key.ensure_kid()
    return key


def _serialise_private(keys: list[ECKey]) -> bytes:
    members = [key.as_dict(private=key.is_private) for key in keys]
    return (json.dumps({"keys": members}, indent=2, sort_keys=True) + "\n").encode()


def _serialise_public(keys: tuple[ECKey, ...]) -> bytes:
    members = [
        {**{name: key[name] for name in PUBLIC_MEMBERS}, "use": "sig", "alg": ALGORITHM}
        for key in keys
    ]
    return json.dumps({"keys": members}, sort_keys=True, separators=(",", ":")).encode()


def _read_material(path: str) -> KeyMaterial:
    return key_material(path, _read_bytes(path))


def key_material(source: str, document: bytes) -> KeyMaterial:
    """Parse a key set document read from `source` (a file, Redis); `ConfigError` if unusable."""
    path = source
    keys = _parse_keys(path, document)
    kids = [key.kid for key in keys]
    duplicates = sorted({str(kid) for kid in kids if kids.count(kid) > 1})
    if duplicates:
        raise ConfigError(f"{path}: two keys share the kid {duplicates[0]!r}")
    return KeyMaterial(keys, _serialise_public(keys))


def _parse_keys(path: str, data: bytes) -> tuple[ECKey, ...]:
    text = data.lstrip()
    if text.startswith(b"{"):
        return _parse_jwk_set(path, text)
    if text.startswith(b"-----BEGIN"):
        return (_parse_pem(path, text),)
    raise ConfigError(f"{path}: not a JWK set (JSON) nor a PEM EC private key")


def _parse_jwk_set(path: str, data: bytes) -> tuple[ECKey, ...]:
    try:
        document = json.loads(data)
    except ValueError as error:
        raise ConfigError(f"{path}: invalid JSON: {_one_line(error)}") from None
    members = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(members, list) or not members:
        raise ConfigError(f'{path}: a JWK set needs a non-empty "keys" list')
    keys = tuple(_parse_jwk(path, index, member) for index, member in enumerate(members))
    if not keys[0].is_private:
        raise ConfigError(f"{path}: the first key (the signing key) has no private part (d)")
    return keys


def _parse_jwk(path: str, index: int, member: Any) -> ECKey:
    where = f"{path}: key {index}"
    if not isinstance(member, dict):
        raise ConfigError(f"{where} is not a JSON object")
    if member.get("kty") != "EC" or member.get("crv") != CURVE:
        found = f"kty {member.get('kty')!r}, crv {member.get('crv')!r}"
        raise ConfigError(f"{where} is not an EC P-256 key ({found}); ES256 needs one")
    for name, expected in (("alg", ALGORITHM), ("use", "sig")):
        if name in member and member[name] != expected:
            raise ConfigError(f"{where} has {name} {member[name]!r}, not {expected!r}")
    try:
        key = ECKey.import_key(member)
    except (JoseError, ValueError, TypeError) as error:
        raise ConfigError(f"{where} is not a valid EC key: {_one_line(error)}") from None
    # Every worker derives the same kid from the key itself (RFC 7638 thumbprint).
    key.ensure_kid()
    return key


def _parse_pem(path: str, data: bytes) -> ECKey:
    if b"PRIVATE KEY" not in data:
        raise ConfigError(f"{path}: the PEM file holds no private key (an EC P-256 one is needed)")
    try:
        key = ECKey.import_key(data, parameters={"use": "sig", "alg": ALGORITHM})
    except (JoseError, ValueError, TypeError) as error:
        raise ConfigError(f"{path}: not an EC P-256 private key: {_one_line(error)}") from None
    if key.curve_name != CURVE:
        raise ConfigError(f"{path}: EC key on {key.curve_name}; ES256 needs P-256")
    key.ensure_kid()
    return key


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as file:
            # fstat: the file checked is the file read, even if the name is swapped.
            _check_private_file(path, os.fstat(file.fileno()))
            return file.read()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read key file: {_one_line(error)}") from None


def _check_private_file(path: str, status: os.stat_result) -> None:
    """Refuse a key file another user could read (the private key) or replace."""
    uid = os.geteuid()
    mode = stat.S_IMODE(status.st_mode)
    quoted = shlex.quote(path)
    if status.st_uid == uid:
        if mode & 0o077:
            raise ConfigError(
                f"{path}: the key file holds a private key and is open to group or others "
                f"(mode {mode:04o}); run `chmod 600 {quoted}`"
            )
    elif status.st_uid == 0:
        if mode & 0o027:
            raise ConfigError(
                f"{path}: the key file holds a private key and is open to others or writable "
                f"by its group (mode {mode:04o}); run `chmod 640 {quoted}` (or `chown "
                f"{_user_name(uid)} {quoted}` and `chmod 600 {quoted}`)"
            )
    else:
        raise ConfigError(
            f"{path}: the key file belongs to {_user_name(status.st_uid)}, not to "
            f"{_user_name(uid)} who runs ory_wsgi; run `chown {_user_name(uid)} {quoted}` "
            f"and `chmod 600 {quoted}`"
        )


def _check_private_dir(directory: str) -> None:
    """Refuse a state directory someone else could write into: they could swap the key set."""
    try:
        status = os.stat(directory)
    except OSError as error:
        raise ConfigError(
            f"{directory}: cannot use the state directory: {_one_line(error)}"
        ) from None
    uid = os.geteuid()
    quoted = shlex.quote(directory)
    if status.st_uid not in (uid, 0):
        raise ConfigError(
            f"{directory}: the state directory belongs to {_user_name(status.st_uid)}, not to "
            f"{_user_name(uid)} who runs ory_wsgi; run `chown {_user_name(uid)} {quoted}` and "
            f"`chmod 700 {quoted}`"
        )
    mode = stat.S_IMODE(status.st_mode)
    if mode & 0o022:
        raise ConfigError(
            f"{directory}: the state directory is writable by group or others (mode "
            f"{mode:04o}), so they could replace the key set; run `chmod 700 {quoted}`"
        )


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _file_signature(path: str) -> tuple[int, int, int]:
    try:
        status = os.stat(path)
    except OSError as error:
        raise ConfigError(f"{path}: cannot read key file: {_one_line(error)}") from None
    return status.st_ino, status.st_size, status.st_mtime_ns


def _make_private_dir(directory: str) -> None:
    parent = os.path.dirname(os.path.abspath(directory))
    try:
        os.makedirs(parent, exist_ok=True)
        os.mkdir(directory, 0o700)
    except FileExistsError:
        _check_private_dir(directory)
        return
    except OSError as error:
        raise ConfigError(
            f"{directory}: cannot create the state directory: {_one_line(error)}"
        ) from None
    # mkdir's mode is filtered by the umask; the directory we made is ours alone.
    os.chmod(directory, 0o700)


def _write_temporary(directory: str, document: bytes) -> str:
    """A complete file with `document`, mode 0600, in `directory` (same filesystem)."""
    descriptor, temporary = tempfile.mkstemp(prefix=".jwks-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(descriptor, "wb") as file:
            os.fchmod(file.fileno(), 0o600)
            file.write(document)
            file.flush()
            os.fsync(file.fileno())
    except BaseException:
        os.unlink(temporary)
        raise
    return temporary


def _link_new_file(path: str, document: bytes) -> None:
    """Create `path` with `document` atomically; FileExistsError if it exists.

    A hard link never replaces an existing name, so of several processes
    racing the first wins and nobody ever sees a partly written file.
    """
    directory = os.path.dirname(os.path.abspath(path))
    temporary = _write_temporary(directory, document)
    try:
        os.link(temporary, path)
    finally:
        os.unlink(temporary)


def _one_line(error: BaseException) -> str:
    text = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    return " ".join(text.split()) or type(error).__name__
