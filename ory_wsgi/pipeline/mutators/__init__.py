"""Mutators (SPEC §16): what the upstream receives besides the request itself.

Each runs after the authorizer allowed the request, in the rule's order, and
adds to `AuthSession.header` (`id_token`: `Authorization`, `header`: templated
headers, `cookie`: the `Cookie` header; `hydrator` merges an API's answer into
the session first) what the adapter passes on: the proxy
upstream, the decisions endpoint in its 200, the embedded middleware into the
app's environ. All must succeed; a failure refuses the request (500, closed).
"""

from __future__ import annotations

from collections.abc import Callable

from ory_wsgi.pipeline.handler import Mutator
from ory_wsgi.pipeline.mutators.cookie import CookieMutator
from ory_wsgi.pipeline.mutators.header import HeaderMutator
from ory_wsgi.pipeline.mutators.hydrator import HydratorMutator
from ory_wsgi.pipeline.mutators.id_token import IdTokenMutator
from ory_wsgi.pipeline.mutators.noop import NoopMutator
from ory_wsgi.pipeline.services import Services

# Built once per rule set as `cls(services)`; then `prepare` once per rule.
MUTATORS: dict[str, Callable[[Services], Mutator]] = {
    "id_token": IdTokenMutator,
    "header": HeaderMutator,
    "cookie": CookieMutator,
    "noop": NoopMutator,
    "hydrator": HydratorMutator,
}
