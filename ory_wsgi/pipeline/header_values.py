"""Header names and values from access rules: checked at load, rendered per request.

Shared by the `header` mutator and every handler that sends templated headers
to a service (remote, remote_json, ory_permissions, oauth2_introspection). It
imports nothing of the mutators package, so service clients can use it without
importing the mutators (hydrator, one of them, is such a client).
"""

from __future__ import annotations

import logging
import re

from ory_wsgi.errors import ConfigError
from ory_wsgi.headers import HOP_BY_HOP
from ory_wsgi.pipeline.errors import internal
from ory_wsgi.pipeline.handler_config import TOKEN_RE, canonical_header_name
from ory_wsgi.rules.template import Template, TemplateContext, TemplateRenderError

log = logging.getLogger("ory_wsgi.pipeline.mutators")

# Headers that frame the request or belong to one hop: the proxy sets them itself.
REFUSED_NAMES = HOP_BY_HOP | {"host", "content-length", "expect"}
# RFC 9110 field values: visible characters, space and tab; no other control character.
CONTROL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def header_name(name: str, where: str) -> str:
    """A header name from a rule, checked and canonicalised at load."""
    if not TOKEN_RE.match(name):
        raise ConfigError(f"{where}: {name!r} is not a valid header name")
    if name.lower() in REFUSED_NAMES:
        raise ConfigError(f"{where}: {name} cannot be set by a rule (the proxy sets it)")
    return canonical_header_name(name)


def header_value(value: str, name: str, where: str) -> str:
    """`value` as sent upstream; DecisionError(500) if it would break the header block."""
    if CONTROL_RE.search(value):
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
