"""The template data of one request: Oathkeeper's AuthenticationSession for templates.

Built per mutator call from the rule's `AuthSession`; nothing is copied (the
headers set so far are read through a view of `session.header`).
"""

from __future__ import annotations

from collections.abc import Iterable

from ory_wsgi.pipeline.state import AuthSession
from ory_wsgi.rules.template import TemplateContext


class SetHeaders:
    """`session.header` (one value per name) as the header source `.Header` reads."""

    __slots__ = ("headers",)

    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers

    def getlist(self, key: str) -> list[str]:
        lowered = key.lower()
        return [value for name, value in self.headers.items() if name.lower() == lowered]

    def items(self) -> Iterable[tuple[str, str]]:
        return self.headers.items()


def template_context(session: AuthSession) -> TemplateContext:
    return TemplateContext(
        subject=session.subject,
        extra=session.extra,
        header=SetHeaders(session.header),
        match=session.match,
    )
