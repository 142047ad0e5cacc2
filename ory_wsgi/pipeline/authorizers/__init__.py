"""Authorizers by name: may this subject do this? `allow`, `deny`, `claims`.

Open for more: part two adds `remote`, `remote_json`, `ory_permissions` and
`claims` to this dict; the pipeline only needs the `Authorizer` protocol.
"""

from __future__ import annotations

from typing import Any

from ory_wsgi.pipeline.authorizers.allow import Allow
from ory_wsgi.pipeline.authorizers.claims import Claims
from ory_wsgi.pipeline.authorizers.deny import Deny

AUTHORIZERS: dict[str, type[Any]] = {"allow": Allow, "claims": Claims, "deny": Deny}
