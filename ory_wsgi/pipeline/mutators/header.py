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

import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ory_wsgi.errors import ConfigError
from ory_wsgi.headers import HOP_BY_HOP
from ory_wsgi.pipeline.errors import internal
from ory_wsgi.pipeline.handler import Config
from ory_wsgi.pipeline.handler_config import (
    TOKEN_RE,
    canonical_header_name,
    known_keys,
    string_map,
)
from ory_wsgi.pipeline.mutators.context import template_context
from ory_wsgi.pipeline.services import Services
from ory_wsgi.pipeline.state import AuthSession, RequestFacts
from ory_wsgi.rules.template import (
    Template,
    TemplateContext,
    TemplateRenderError,
    compile_template,
)

log = logging.getLogger("ory_wsgi.pipeline.mutators")

# Headers that frame the request or belong to one hop: the proxy sets them itself.
REFUSED_NAMES = HOP_BY_HOP | {"host", "content-length", "expect"}
# RFC 9110 field values: visible characters, space and tab; no other control character.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class PreparedHeaders:
    where: str
    headers: tuple[tuple[str, Template], ...]


def header_name(name: str, where: str) -> str:
    """A header name from a rule, checked and canonicalised at load."""
    if not TOKEN_RE.match(name):
        raise ConfigError(f"{where}: {name!r} is not a valid header name")
    if name.lower() in REFUSED_NAMES:
        raise ConfigError(f"{where}: {name} cannot be set by a rule (the proxy sets it)")
    return canonical_header_name(name)


def header_value(value: str, name: str, where: str) -> str:
    """`value` as sent upstream; DecisionError(500) if it would break the header block."""
    if _CONTROL_RE.search(value):
        log.error("%s: the value rendered for %s holds a control character; refused", where, name)
        raise internal("A header for the upstream could not be built")
    if not value.isascii():
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            return value.encode("utf-8").decode("latin-1")
    return value


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


def render(template: Template, context: TemplateContext, where: str) -> str:
    """The template's text for this request; DecisionError(500) past its limits."""
    try:
        return template.render(context)
    except TemplateRenderError as exc:
        log.error("%s: %s; refused", where, exc)
        raise internal("A template of the access rule could not be rendered") from exc


class HeaderMutator:
    name = "header"

    def __init__(self, services: Services) -> None:
        pass

    def prepare(self, config: Config, where: str) -> PreparedHeaders:
        known_keys(config, ("headers",), where)
        headers = compile_values(
            config, "headers", where, header_name, _CONTROL_RE, "a control character"
        )
        return PreparedHeaders(where, headers)

    def mutate(self, request: RequestFacts, session: AuthSession, prepared: Any) -> None:
        assert isinstance(prepared, PreparedHeaders)
        for name, value in rendered(prepared.headers, session, prepared.where):
            session.header[name] = header_value(value, name, prepared.where)
