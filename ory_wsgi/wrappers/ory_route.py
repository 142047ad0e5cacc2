"""Ory-bound requests (`/.ory/*`) go to Ory, with its answers rewritten onto our domain.

    app = OryRoute(app, OryForwarder(...))

The `/.ory` prefix is stripped once (on a segment boundary, after dot
segments are resolved, so `/.ory/../x` is app-bound). Ory gets its own
cookies and the client's Authorization (API flows), never the app's cookies;
the browser gets Ory's cookies on the public domain and Ory's URLs under
`<public URL>/.ory`. No whoami call is made for these requests.

Kratos routes on the decoded path, so an Ory-bound path is judged decoded:
one with an encoded separator (`%2F`, `%5C`), `%25`, an encoded control or a
malformed escape is refused (400), since it would be read as another path
behind us; one that any lenient reading puts under `/admin` (any case) is
refused (404). What remains cannot climb out of the Ory URL's own path.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import unquote

from ory_wsgi.answers import error_answer
from ory_wsgi.errors import BadRequest
from ory_wsgi.ory.cookies import ory_cookies
from ory_wsgi.ory.rewrite import OryRewriter
from ory_wsgi.paths import EMBEDDED_KEY, app_relative_path, normalise_path, readings
from ory_wsgi.pipeline.request import read_target
from ory_wsgi.upstream.forwarder import Forwarder
from ory_wsgi.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger("ory_wsgi.ory")

PREFIX = "/.ory"
# Ory Network serves its admin API on the project domain too: never through us.
ADMIN_PREFIX = "/admin"


# What Ory, or a proxy in front of it, would decode into a separator, another
# escape or a control: an Ory-bound path never carries them.
_REFUSED_IN_ORY_PATH = re.compile(
    r"%(?:2[Ff]|5[Cc]|25|[01][0-9A-Fa-f]|7[Ff])|%(?![0-9A-Fa-f]{2})|\\"
)


def is_ory_bound(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def _may_be_ory_bound(raw_path: str) -> bool:
    """Cheap first look: normalising only decodes escapes, so `.ory` needs "ory" or a `%`."""
    return "ory" in raw_path or "%" in raw_path


def _is_admin(ory_path: str) -> bool:
    """Whether any reading of the decoded path is under `/admin`, in any case."""
    for reading in readings(ory_path):
        lowered = reading.lower()
        if lowered == ADMIN_PREFIX or lowered.startswith(ADMIN_PREFIX + "/"):
            return True
    return False


class OryForwarder(Forwarder):
    """The forwarder, pointed at Ory, with the rewrites Ory's answers need."""

    def __init__(
        self,
        ory_url: str,
        public_url: str,
        rewriter: OryRewriter,
        *,
        api_key: str = "",
        rate_limit_header: str = "",
        session_cookie: str = "",
        **kwargs: Any,
    ) -> None:
        super().__init__(ory_url, public_url, rewrite_host=True, **kwargs)
        self.rewriter = rewriter
        self.ory_headers = {
            "Ory-Base-URL-Rewrite": public_url.rstrip("/") + PREFIX,
            "Ory-No-Custom-Domain-Redirect": "true",
        }
        if api_key:
            self.ory_headers["Ory-Base-URL-Rewrite-Token"] = api_key
        if rate_limit_header:
            self.ory_headers["Ory-RateLimit-Action"] = rate_limit_header
        self.session_cookies = frozenset({session_cookie} if session_cookie else ())

    def adjust_request_headers(self, environ: WSGIEnvironment, headers: dict[str, str]) -> None:
        headers.update(self.ory_headers)
        cookie = headers.pop("Cookie", "")
        if cookie:
            kept = ory_cookies(cookie, self.session_cookies, environ.get("ory.request_id", ""))
            if kept:
                headers["Cookie"] = kept
        accept = environ.get("HTTP_ACCEPT_ENCODING", "")
        if "gzip" in accept.lower():
            headers["Accept-Encoding"] = "gzip"
        else:
            headers.pop("Accept-Encoding", None)

    def adjust_response(
        self,
        environ: WSGIEnvironment,
        headers: list[tuple[str, str]],
        body: Iterable[bytes] | None,
    ) -> tuple[list[tuple[str, str]], Iterable[bytes] | None]:
        ory_path = environ["ory.ory_path"]
        headers = self.rewriter.rewrite_response_headers(headers, ory_path)
        if body is None:
            return headers, None
        content_type = content_encoding = ""
        for name, value in headers:
            lowered = name.lower()
            if lowered == "content-type":
                content_type = value
            elif lowered == "content-encoding":
                content_encoding = value
        if not self.rewriter.is_rewritable(content_type, content_encoding):
            return headers, body
        # The rewritten bytes differ from Ory's: their length and ETag no longer hold.
        headers = [(k, v) for k, v in headers if k.lower() not in ("content-length", "etag")]
        return headers, RewrittenBody(
            body, self.rewriter.rewrite_body(body, content_type, content_encoding)
        )

    def rewrite_location(self, location: str) -> str:
        return location  # done with the other Ory rewrites in adjust_response


class RewrittenBody:
    """A rewritten stream that still closes the upstream response under it."""

    def __init__(self, source: Iterable[bytes], rewritten: Iterator[bytes]) -> None:
        self.source = source
        self.rewritten = rewritten

    def __iter__(self) -> Iterator[bytes]:
        return self.rewritten

    def close(self) -> None:
        close = getattr(self.source, "close", None)
        if close is not None:
            close()


class OryRoute:
    def __init__(
        self, app: WSGIApplication, forwarder: OryForwarder | None, ory_base_path: str = ""
    ) -> None:
        self.app = app
        self.forwarder = forwarder
        self.ory_base_path = ory_base_path.rstrip("/")

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        try:
            raw_path, _, query = read_target(environ).partition("?")
        except BadRequest:
            # Not a target anything could route to Ory; the layers inside answer it.
            return self.app(environ, start_response)
        if not _may_be_ory_bound(raw_path):
            return self.app(environ, start_response)
        try:
            path = normalise_path(raw_path).path
            if environ.get(EMBEDDED_KEY):
                # In-process, `/.ory` is under the application's mount point.
                path = app_relative_path(path, environ.get("SCRIPT_NAME", ""))
            if not is_ory_bound(path):
                return self.app(environ, start_response)
            if _REFUSED_IN_ORY_PATH.search(path):
                raise BadRequest(
                    "a path bound for Ory has an encoded '/', '\\', '%' or control character"
                )
        except BadRequest as exc:
            log.warning("bad_request: %s: %r", exc, environ.get("RAW_URI", "")[:200])
            environ["ory.error"] = "bad_request"
            return error_answer(environ, start_response, 400, f"Malformed request: {exc}.")
        ory_path = path[len(PREFIX) :] or "/"
        if self.forwarder is None:
            return error_answer(
                environ,
                start_response,
                404,
                "Ory is not configured: set [ory] sdk_url or project (ORY_SDK_URL, ORY_PROJECT).",
            )
        if _is_admin(unquote(ory_path, errors="replace")):
            log.warning("ory_admin: refused %r", ory_path[:200])
            return error_answer(environ, start_response, 404, "Ory's admin API is not proxied.")
        environ["ory.decision"] = "ory"
        environ["ory.ory_path"] = ory_path
        environ["ory.target"] = self.ory_base_path + ory_path + (f"?{query}" if query else "")
        authorization = environ.get("HTTP_AUTHORIZATION")
        if authorization:
            environ["ory.authorization"] = authorization
        answer: Iterable[bytes] = self.forwarder(environ, start_response)
        return answer
