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
        headers: list[tuple[str, Template]] = []
        for name, text in string_map(config, "headers", where).items():
            canonical = header_name(name, f"{where} headers")
            template = compile_template(text, where=f"{where} headers.{name}")
            if template.constant is not None and _CONTROL_RE.search(template.constant):
                raise ConfigError(f"{where} headers.{name}: holds a control character")
            headers.append((canonical, template))
        return PreparedHeaders(where, tuple(headers))

    def mutate(self, request: RequestFacts, session: AuthSession, prepared: Any) -> None:
        assert isinstance(prepared, PreparedHeaders)
        context: TemplateContext | None = None
        for name, template in prepared.headers:
            if template.constant is not None:
                value = template.constant
            else:
                if context is None:
                    context = template_context(session)
                value = render(template, context, prepared.where)
            session.header[name] = header_value(value, name, prepared.where)
