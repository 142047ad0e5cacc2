"""Authorizers by name: may this subject do this? `allow`, `deny`, `claims`,
`ory_permissions`, `remote_json`, `remote`.

Open for more: the pipeline only needs the `Authorizer` protocol.
"""

from __future__ import annotations

from typing import Any

from ory_wsgi.pipeline.authorizers.allow import Allow
from ory_wsgi.pipeline.authorizers.claims import Claims
from ory_wsgi.pipeline.authorizers.deny import Deny
from ory_wsgi.pipeline.authorizers.ory_permissions import OryPermissions
from ory_wsgi.pipeline.authorizers.remote import Remote
from ory_wsgi.pipeline.authorizers.remote_json import RemoteJson

AUTHORIZERS: dict[str, type[Any]] = {
    "allow": Allow,
    "claims": Claims,
    "deny": Deny,
    "ory_permissions": OryPermissions,
    "remote": Remote,
    "remote_json": RemoteJson,
}
