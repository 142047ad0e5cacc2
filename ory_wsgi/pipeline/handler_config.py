"""Reading a handler's config at load: known keys only, typed values, one-line errors.

Shared by the mutators and the error handlers. Every failure is a `ConfigError`
naming `where` (the rule and handler) and the key, so the rule is marked
invalid and fails closed.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from typing import Any

from ory_wsgi.errors import ConfigError

# RFC 9110 token characters: header and cookie names.
TOKEN_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


def known_keys(config: Mapping[str, Any], known: Iterable[str], where: str) -> None:
    """Refuse keys the handler does not read (a typo would otherwise be ignored)."""
    names = list(known)
    for key in config:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f' (did you mean "{close[0]}"?)' if close else ""
            raise ConfigError(f"{where}: unknown config key {key!r}{hint}")


def string(config: Mapping[str, Any], key: str, where: str, default: str = "") -> str:
    value = config.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise ConfigError(f"{where}: {key} must be a string, got {value!r}")
    return value


def boolean(config: Mapping[str, Any], key: str, where: str, default: bool = False) -> bool:
    value = config.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: {key} must be true or false, got {value!r}")
    return value


def string_map(config: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    value = config.get(key) or {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: {key} must be a table of name = template, got {value!r}")
    return {str(name): text for name, text in value.items()}


def string_list(raw: Any, where: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list | tuple) or not all(isinstance(item, str) for item in raw):
        raise ConfigError(f"{where}: must be a list of strings, got {raw!r}")
    return tuple(raw)


def canonical_header_name(name: str) -> str:
    """Go's `CanonicalMIMEHeaderKey` (`x-user-id` -> `X-User-Id`), as Oathkeeper sets them."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))
