"""Session lookup: whose request is this? One whoami per credential, cached per worker.

    app = SessionLookup(app, client, cache, cookie_names)

A request without an Ory credential is anonymous without asking Ory. The
result goes into `environ`: `ory.session` (the whoami JSON, or None),
`ory.identity`, `ory.subject`, `ory.aal_required`, and `ory.error`
(`ory_unavailable`, `rate_limited`) with `ory.retry_after`. An open path
goes on anonymously when Ory cannot be asked; the protection layer decides
for protected ones.
"""

from __future__ import annotations

from collections.abc import Iterable

from ory_wsgi.ory.cache import SessionCache
from ory_wsgi.ory.client import Lookup, OryClient, extract_credentials
from ory_wsgi.wsgi import StartResponse, WSGIApplication, WSGIEnvironment


class SessionLookup:
    def __init__(
        self,
        app: WSGIApplication,
        client: OryClient,
        cache: SessionCache,
        cookie_names: frozenset[str],
    ) -> None:
        self.app = app
        self.client = client
        self.cache = cache
        self.cookie_names = cookie_names

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        self.lookup(environ)
        return self.app(environ, start_response)

    def lookup(self, environ: WSGIEnvironment) -> Lookup | None:
        """Fill the `ory.*` session keys of `environ`; None for a request without credentials."""
        credentials = extract_credentials(environ, self.cookie_names)
        environ["ory.credentials"] = credentials
        if credentials is None:
            environ["ory.session"] = None
            environ["ory.identity"] = None
            return None
        request_id = environ.get("ory.request_id", "")
        client = self.client
        lookup = self.cache.get(credentials, lambda: client.whoami(credentials, request_id))
        session = lookup.session
        environ["ory.session"] = session
        environ["ory.identity"] = session.get("identity") if session else None
        if lookup.subject:
            environ["ory.subject"] = lookup.subject
        if lookup.outcome == "aal2_required":
            environ["ory.aal_required"] = True
        elif lookup.outcome == "rate_limited":
            environ["ory.error"] = "rate_limited"
            environ["ory.retry_after"] = lookup.retry_after
        elif lookup.outcome == "error":
            environ["ory.error"] = lookup.error or "ory_unavailable"
        return lookup
