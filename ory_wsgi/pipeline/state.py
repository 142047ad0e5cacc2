"""The request as the pipeline sees it, and what the pipeline learns about it.

`RequestFacts` is built once per request by a mode adapter (proxy, decisions,
embedded) from what that mode trusts: the raw request target (never a client
header), the peer, and for the decisions endpoint the trusted X-Forwarded-*.
`AuthSession` is Oathkeeper's AuthenticationSession: what the authenticators
found (subject, extra) and what the mutators want the upstream to receive.
`RequestState` is the one typed object the adapters leave in
`environ["ory.state"]` for the layers outside (access log, metrics) and apps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ory_wsgi.ory.client import Credentials
from ory_wsgi.paths import NormalisedPath
from ory_wsgi.rules.model import Upstream
from ory_wsgi.rules.template import HeaderSource, MatchContext

STATE_KEY = "ory.state"


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """One request, read once: what every handler may look at.

    `method` is the request's own method; `methods` adds any method it claims
    through an override header (a method-limited rule must see both). `path`
    is the normalised path (its `views` are the readings rules are judged on);
    `target` is what is forwarded (normalised path + query). `headers` is a
    lazy view (werkzeug's EnvironHeaders) of the request headers, after the
    adapter removed the ones a client may not send. `environ` is the WSGI
    environ for handlers that need the whoami credentials from it.
    `credentials` are the session credentials the adapter read (once, for
    every authenticator); `anonymous` is true when it found none at all (no
    session cookie, `X-Session-Token` or bearer token): no session
    authenticator can be responsible. Both unset when the adapter did not look.
    """

    method: str
    methods: tuple[str, ...]
    scheme: str
    host: str
    path: NormalisedPath
    query: str
    target: str
    headers: HeaderSource
    remote_addr: str
    request_id: str
    environ: Mapping[str, Any]
    credentials: Credentials | None = None
    anonymous: bool = False


@dataclass(slots=True)
class AuthSession:
    """What the rule's handlers learn and decide for one request (not shared across threads).

    `ory_session` is Kratos' whoami JSON when a session authenticator accepted
    the request. `header` and `cookies` are what the mutators set on the
    upstream request (the id_token's `Authorization`, `X-User-Id`, ...).
    """

    match: MatchContext
    subject: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    ory_session: dict[str, Any] | None = None
    header: dict[str, str] = field(default_factory=dict)
    cookies: dict[str, str] = field(default_factory=dict)
    authenticator: str = ""
    # Why an optional session authenticator stood aside (an open path goes on):
    ory_error: str = ""  # "ory_unavailable" or "rate_limited"
    aal_required: bool = False  # Kratos answered session_aal2_required


@dataclass(slots=True)
class RequestState:
    """`environ["ory.state"]`: the decision taken and why, for logs, metrics and apps."""

    rule_id: str = ""
    decision: str = ""  # allow, deny, login, step_up, unavailable, ...
    subject: str = ""
    error: str = ""
    upstream: str = ""
    strip_path: str = ""
    # The allowing rule's whole `upstream` (url, preserve_host, strip_path, TLS): what the
    # proxy's router forwards by. None: no rule allowed (or the shorthand's) -- `[proxy] upstream`.
    rule_upstream: Upstream | None = None
    session: dict[str, Any] | None = None
