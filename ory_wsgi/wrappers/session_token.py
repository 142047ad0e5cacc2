"""Session → JWT: the upstream gets `Authorization: Bearer <jwt>` of the session, or nothing.

    app = SessionToken(app, minter)

A client's own Authorization header is always taken out of `environ`; the
forwarder sends only `environ["ory.authorization"]`, set here. With
`keep_client_authorization`, an anonymous request keeps the client's header.
"""

from __future__ import annotations

from collections.abc import Iterable

from ory_wsgi.tokens import TokenMinter
from ory_wsgi.wsgi import StartResponse, WSGIApplication, WSGIEnvironment


class SessionToken:
    def __init__(
        self,
        app: WSGIApplication,
        minter: TokenMinter | None,
        keep_client_authorization: bool = False,
    ) -> None:
        self.app = app
        self.minter = minter
        self.keep_client_authorization = keep_client_authorization

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        client_authorization = environ.pop("HTTP_AUTHORIZATION", None)
        session = environ.get("ory.session")
        if session is not None:
            if self.minter is not None:
                environ["ory.authorization"] = "Bearer " + self.minter.mint(session)
        elif client_authorization and self.keep_client_authorization:
            environ["ory.authorization"] = client_authorization
        return self.app(environ, start_response)
