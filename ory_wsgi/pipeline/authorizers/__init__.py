"""Authorizers by name: may this subject do this? `allow`, `deny`, `claims`, `ory_permissions`.

Open for more: `remote` and `remote_json` come next; the pipeline only needs the
`Authorizer` protocol.
"""

from __future__ import annotations

from typing import Any

from ory_wsgi.pipeline.authorizers.allow import Allow
from ory_wsgi.pipeline.authorizers.claims import Claims
from ory_wsgi.pipeline.authorizers.deny import Deny
from ory_wsgi.pipeline.authorizers.ory_permissions import OryPermissions

AUTHORIZERS: dict[str, type[Any]] = {
    "allow": Allow,
    "claims": Claims,
    "deny": Deny,
    "ory_permissions": OryPermissions,
}
