"""`claims`: allow when fields of the session hold allowed values; no service, no code.

    authorizer = { handler = "claims", config = { require = {
        "identity.metadata_public.role" = ["admin", "editor"],
        "identity.verifiable_addresses[*].verified" = [true],
    } } }

Every listed path must match (AND); a path matches when its value is one of
the listed values (OR). A path is dotted keys read from the Kratos session
(`session.ory_session`), or from the authenticator's `extra` when another
authenticator filled the session; `name[*]` walks every element of a list and
the path matches when ANY element does (`verifiable_addresses[*].verified =
[true]`: at least one verified address). Values compare by JSON type as well
as value (`true` is not `1`, `"1"` is not `1`). A missing key, a list where a
key was expected or a non-list under `[*]` does not match. Paths are parsed
once at load; there is no expression language, so nothing in a rule file runs.
A request that does not match is refused with 403 forbidden.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ory_wsgi.errors import ConfigError
from ory_wsgi.pipeline.errors import DecisionError
from ory_wsgi.pipeline.handler import Config
from ory_wsgi.pipeline.handler_config import known_keys
from ory_wsgi.pipeline.services import Services
from ory_wsgi.pipeline.state import AuthSession, RequestFacts

_SEGMENT = re.compile(r"^([A-Za-z0-9_\-:@$]+)(\[\*\])?$")
_EVERY = "*"  # a step that walks every element of a list
_SCALARS = (str, int, float, bool, type(None))


@dataclass(frozen=True, slots=True)
class Requirement:
    path: str
    steps: tuple[str, ...]
    allowed: tuple[Any, ...]

    def holds(self, data: Mapping[str, Any]) -> bool:
        return any(_one_of(value, self.allowed) for value in _walk(data, self.steps, 0))


def _walk(value: Any, steps: tuple[str, ...], index: int) -> Iterator[Any]:
    if index == len(steps):
        yield value
        return
    step = steps[index]
    if step is _EVERY:
        if isinstance(value, list):
            for item in value:
                yield from _walk(item, steps, index + 1)
    elif isinstance(value, Mapping) and step in value:
        yield from _walk(value[step], steps, index + 1)


def _one_of(value: Any, allowed: tuple[Any, ...]) -> bool:
    # type() too: True == 1 in Python, not in JSON.
    return any(type(value) is type(wanted) and value == wanted for wanted in allowed)


def parse_path(path: str, where: str) -> tuple[str, ...]:
    steps: list[str] = []
    for segment in path.split("."):
        match = _SEGMENT.match(segment)
        if match is None:
            raise ConfigError(
                f"{where}: path {path!r}: {segment!r} is not a key or key[*] (dotted keys only)"
            )
        steps.append(match.group(1))
        if match.group(2):
            steps.append(_EVERY)
    return tuple(steps)


class Claims:
    name = "claims"

    def __init__(self, services: Services) -> None:
        del services

    def prepare(self, config: Config, where: str) -> tuple[Requirement, ...]:
        known_keys(config, ("require",), where)
        require = config.get("require")
        if not isinstance(require, Mapping) or not require:
            raise ConfigError(f'{where}: require must be a table of "path" = [values], not empty')
        requirements = []
        for path, allowed in require.items():
            if not isinstance(allowed, list) or not allowed:
                raise ConfigError(f"{where}: require.{path} must be a non-empty list of values")
            for value in allowed:
                if not isinstance(value, _SCALARS):
                    raise ConfigError(
                        f"{where}: require.{path}: {value!r} is not a string, number, bool or null"
                    )
            requirements.append(
                Requirement(str(path), parse_path(str(path), where), tuple(allowed))
            )
        return tuple(requirements)

    def authorize(
        self, request: RequestFacts, session: AuthSession, prepared: tuple[Requirement, ...]
    ) -> None:
        data = session.ory_session if session.ory_session is not None else session.extra
        for requirement in prepared:
            if not requirement.holds(data):
                raise DecisionError(
                    403,
                    "forbidden",
                    "Access is denied.",
                    reason=f"claim {requirement.path} is not one of the allowed values",
                )
