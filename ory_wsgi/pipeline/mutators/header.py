"""`header` mutator: templated headers for the upstream (Oathkeeper's `header`).

    mutators = [{handler = "header", config = {headers = {X-User-Id = "{{ print .Subject }}"}}}]

At load each name is checked (an HTTP token; not a framing or hop-by-hop header
such as Content-Length, Transfer-Encoding, Connection or Host, which a templated
value could turn into request smuggling) and canonicalised as Go does
(`x-user-id` -> `X-User-Id`); each value is compiled once. Per request the
values are rendered into `session.header`, later ones seeing earlier ones as
`.Header`. A rendered value holding a control character (CR, LF, NUL, ...) is
never sent: the request is refused with 500 and one log line (closed).
Characters outside Latin-1 are sent as their UTF-8 bytes, as Oathkeeper does
(the WSGI convention for bytes in a header string).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ory_wsgi.errors import ConfigError
from ory_wsgi.pipeline.handler import Config
from ory_wsgi.pipeline.handler_config import (
    known_keys,
    string_map,
)
from ory_wsgi.pipeline.header_values import CONTROL_RE, header_name, header_value, render
from ory_wsgi.pipeline.mutators.context import template_context
from ory_wsgi.pipeline.services import Services
from ory_wsgi.pipeline.state import AuthSession, RequestFacts
from ory_wsgi.rules.template import (
    Template,
    TemplateContext,
    compile_template,
)


@dataclass(frozen=True, slots=True)
class PreparedHeaders:
    where: str
    headers: tuple[tuple[str, Template], ...]


def compile_values(
    config: Config,
    key: str,
    where: str,
    name_of: Callable[[str, str], str],
    refused: re.Pattern[str],
    what: str,
) -> tuple[tuple[str, Template], ...]:
    """`config[key]` (a name -> template map) compiled once at load, for `header` and `cookie`.

    Each name goes through `name_of(name, where)` (checks it, may canonicalise
    it); a constant value that `refused` finds a character in is a ConfigError
    naming `what` it holds.
    """
    values: list[tuple[str, Template]] = []
    for name, text in string_map(config, key, where).items():
        checked = name_of(name, f"{where} {key}")
        template = compile_template(text, where=f"{where} {key}.{name}")
        if template.constant is not None and refused.search(template.constant):
            raise ConfigError(f"{where} {key}.{name}: holds {what}")
        values.append((checked, template))
    return tuple(values)


def rendered(
    values: tuple[tuple[str, Template], ...], session: AuthSession, where: str
) -> Iterator[tuple[str, str]]:
    """Each (name, text) for this request; the template context is built once, if needed."""
    context: TemplateContext | None = None
    for name, template in values:
        if template.constant is not None:
            yield name, template.constant
            continue
        if context is None:
            context = template_context(session)
        yield name, render(template, context, where)


class HeaderMutator:
    name = "header"

    def __init__(self, services: Services) -> None:
        pass

    def prepare(self, config: Config, where: str) -> PreparedHeaders:
        known_keys(config, ("headers",), where)
        headers = compile_values(
            config, "headers", where, header_name, CONTROL_RE, "a control character"
        )
        return PreparedHeaders(where, headers)

    def mutate(self, request: RequestFacts, session: AuthSession, prepared: Any) -> None:
        assert isinstance(prepared, PreparedHeaders)
        for name, value in rendered(prepared.headers, session, prepared.where):
            session.header[name] = header_value(value, name, prepared.where)
