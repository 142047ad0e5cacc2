"""OAuth2 scope matching, as Ory Hydra and Oathkeeper do it (fosite's strategies).

    check = scope_strategy("hierarchic", where)     # once per rule, at load
    check(granted=("photos", "openid"), required="photos.read")   # -> True

`required_scope` on a rule holds when every required scope is matched by one
granted scope under the rule's `scope_strategy`:

- `exact`: the same string.
- `hierarchic`: the same string, or a granted scope that is a dot-separated
  prefix of the required one (`photos` grants `photos.read`, never the
  reverse).
- `wildcard`: a granted `*` segment stands for any one non-empty segment, and a
  trailing `*` for one or more (`photos.*` grants `photos.read` and
  `photos.read.own`; `*` alone grants every scope).
- `none`: scopes are not checked (Oathkeeper's default when no strategy is set
  and no scope is required).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ory_wsgi.errors import ConfigError

ScopeCheck = Callable[[Iterable[str], str], bool]


def exact(granted: Iterable[str], required: str) -> bool:
    return required in granted


def hierarchic(granted: Iterable[str], required: str) -> bool:
    needle = required.split(".")
    for scope in granted:
        if scope == required:
            return True
        parts = scope.split(".")
        if len(parts) < len(needle) and needle[: len(parts)] == parts:
            return True
    return False


def wildcard(granted: Iterable[str], required: str) -> bool:
    needle = required.split(".")
    for scope in granted:
        parts = scope.split(".")
        if len(parts) > len(needle):
            continue
        last = len(parts) - 1
        for index, part in enumerate(parts):
            if index == last and len(parts) != len(needle) and part != "*":
                break
            if part == "*" and needle[index]:
                continue
            if part != needle[index]:
                break
        else:
            return True
    return False


def anything(granted: Iterable[str], required: str) -> bool:
    return True


STRATEGIES: dict[str, ScopeCheck] = {
    "exact": exact,
    "hierarchic": hierarchic,
    "wildcard": wildcard,
    "none": anything,
}


def scope_strategy(name: object, where: str) -> ScopeCheck:
    """The check for `scope_strategy` (default `none`); a `ConfigError` naming `where` otherwise."""
    if name is None or name == "":
        return anything
    check = STRATEGIES.get(str(name).lower()) if isinstance(name, str) else None
    if check is None:
        raise ConfigError(
            f"{where}: scope_strategy must be one of exact, hierarchic, wildcard, none; "
            f"got {name!r}"
        )
    return check


def missing_scope(check: ScopeCheck, granted: Iterable[str], required: Iterable[str]) -> str:
    """The first required scope no granted one matches, or "" when all are granted."""
    have = tuple(granted)
    for scope in required:
        if not check(have, scope):
            return scope
    return ""


def granted_scopes(claim: object) -> tuple[str, ...]:
    """A token's scopes from its `scope` (space-separated, RFC 7662/9068) or `scp` (list) claim."""
    if isinstance(claim, str):
        return tuple(claim.split())
    if isinstance(claim, list | tuple):
        return tuple(s for s in claim if isinstance(s, str))
    return ()
