"""Endpoints the proxy answers itself under `/.ory/`: the JWKS and the logout link."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ory_wsgi.answers import error_answer
from ory_wsgi.keys import KeySet
from ory_wsgi.ory.cache import SessionCache
from ory_wsgi.ory.client import OryClient, OryUnavailable, extract_credentials
from ory_wsgi.wsgi import StartResponse, WSGIEnvironment

if TYPE_CHECKING:
    from ory_wsgi.fleet.session_store import SharedSessionStore

log = logging.getLogger("ory_wsgi.logout")

JWKS_MAX_AGE = 300


class JwksEndpoint:
    """`/.ory/jwks.json`: the public key set, the same bytes from every worker."""

    def __init__(self, keys: KeySet) -> None:
        self.keys = keys

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        body = self.keys.jwks_document()
        start_response(
            "200 OK",
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                ("Cache-Control", f"public, max-age={JWKS_MAX_AGE}"),
                ("Access-Control-Allow-Origin", "*"),
            ],
        )
        return [] if environ["REQUEST_METHOD"] == "HEAD" else [body]


class LogoutEndpoint:
    """`/.ory/proxy/logout`: ends the browser's Ory session in one click.

    Kratos' logout takes two steps (ask for a logout URL, then visit it); this
    does the first server-side and sends the browser to the second, asking
    Ory to return it to `after_logout_url` (`[proxy] default_redirect_url`,
    else the public URL's `/`) rather than to Ory's own page. A request
    from another site (`Sec-Fetch-Site: cross-site`) is refused, so a foreign
    page cannot log users out. With a fleet (`[session_cache] backend =
    "redis"`) the session is dropped from every worker's cache before the
    answer leaves.
    """

    def __init__(
        self,
        client: OryClient,
        cache: SessionCache,
        cookie_names: frozenset[str],
        after_logout_url: str,
        fleet: SharedSessionStore | None = None,
    ) -> None:
        self.client = client
        self.cache = cache
        self.fleet = fleet
        self.cookie_names = cookie_names
        self.after_logout_url = after_logout_url

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("HTTP_SEC_FETCH_SITE") == "cross-site":
            return error_answer(environ, start_response, 403, "Logout from another site refused.")
        credentials = extract_credentials(environ, self.cookie_names)
        location: str | None = None
        if credentials is not None:
            try:
                location = self.client.logout_url(
                    credentials, environ.get("ory.request_id", ""), self.after_logout_url
                )
            except OryUnavailable:
                return error_answer(
                    environ,
                    start_response,
                    503,
                    "The login service is unavailable, try again shortly.",
                    headers=[("Retry-After", "5")],
                )
            self.cache.drop(credentials)
            if self.fleet is not None:
                self.fleet.revoke_digest(credentials.cache_key)
        environ["ory.decision"] = "logout"
        start_response(
            "303 See Other",
            [
                ("Location", location or self.after_logout_url),
                ("Content-Length", "0"),
                ("Cache-Control", "no-store"),
            ],
        )
        return []
