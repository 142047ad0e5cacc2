"""Normalise the request path once, refuse spellings that could hide a protected path.

    app = PathCheck(app, rules)

Sets `environ["ory.target"]` (the normalised path and the query, what the
forwarder sends), `environ["ory.match_path"]` and `environ["ory.rule"]` (the
protect rule that governs the request, or None). The path is always read
from the request line, never from a header; `X-Original-URL` and
`X-Rewrite-URL` are dropped so that the application cannot be told another.

The rules judge the path the application routes on. The proxy forwards the
whole target, so it judges the whole target and `SCRIPT_NAME` changes
nothing. In-process (`environ["ory.embedded"]`) the application routes on
the path after its mount point: the rules judge the normalised target minus
`SCRIPT_NAME` (which gunicorn takes from a client header from its
`forwarded_allow_ips`), a target not under `SCRIPT_NAME` is refused (400),
and `environ["ory.path_info"]` is the `PATH_INFO` the application must get.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from urllib.parse import unquote_to_bytes, urlsplit

from ory_wsgi.answers import error_answer
from ory_wsgi.errors import BadRequest
from ory_wsgi.paths import PathRules, normalise_path
from ory_wsgi.upstream.forwarder import request_target
from ory_wsgi.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger("ory_wsgi.protect")

# Headers with which frameworks (Rails, Laravel, Express, Symfony) let a
# request claim another method: a method-limited rule must see that claim too.
METHOD_OVERRIDE_KEYS = (
    "HTTP_X_HTTP_METHOD_OVERRIDE",
    "HTTP_X_HTTP_METHOD",
    "HTTP_X_METHOD_OVERRIDE",
)
# Headers with which IIS-era frameworks (old Symfony, Zend, ASP.NET) route
# by another path than the request line's: the checked path must be the only one.
PATH_OVERRIDE_KEYS = ("HTTP_X_ORIGINAL_URL", "HTTP_X_REWRITE_URL")
# Set in environ by the embedded middleware: the app routes on the path after SCRIPT_NAME.
EMBEDDED_KEY = "ory.embedded"


class PathCheck:
    def __init__(self, app: WSGIApplication, rules: PathRules) -> None:
        self.app = app
        self.rules = rules

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        try:
            target = request_target(environ)
            raw_path, _, query = target.partition("?")
            normalised = checked = normalise_path(raw_path)
            if environ.get(EMBEDDED_KEY):
                relative = app_relative_path(normalised.path, environ.get("SCRIPT_NAME", ""))
                if relative != normalised.path:
                    checked = normalise_path(relative or "/")
                environ["ory.path_info"] = wsgi_path(relative)
            if self.rules.refuses(checked):
                raise BadRequest("the path has an encoded '/', '\\', '#', '%' or control character")
        except BadRequest as exc:
            log.warning("bad_request: %s: %r", exc, environ.get("RAW_URI", "")[:200])
            environ["ory.error"] = "bad_request"
            return error_answer(environ, start_response, 400, f"Malformed request: {exc}.")
        for key in PATH_OVERRIDE_KEYS:
            environ.pop(key, None)
        environ["ory.target"] = normalised.path + (f"?{query}" if query else "")
        environ["ory.match_path"] = checked.match
        environ["ory.rule"] = self.rules.governing(checked, request_methods(environ))
        return self.app(environ, start_response)


def app_relative_path(path: str, script_name: str) -> str:
    """The normalised `path` after the mount point `script_name` (WSGI text); "" for the mount.

    Segments are compared decoded and exactly; BadRequest when `path` is not
    under `script_name`, or `script_name` has dot segments (never a mount point).
    """
    mount = [segment for segment in script_name.split("/") if segment]
    if not mount:
        return path
    if any(segment in (".", "..") for segment in mount):
        raise BadRequest("SCRIPT_NAME has dot segments")
    segments = path.split("/")[1:]
    head = [wsgi_path(segment) for segment in segments[: len(mount)]]
    if head != mount:
        raise BadRequest("the request path is not under the application's SCRIPT_NAME")
    rest = segments[len(mount) :]
    return "/" + "/".join(rest) if rest else ""


def wsgi_path(path: str) -> str:
    """A percent-encoded path as WSGI gives `PATH_INFO`: decoded bytes as latin-1 text."""
    return unquote_to_bytes(path).decode("latin-1") if "%" in path else path


def request_methods(environ: WSGIEnvironment) -> tuple[str, ...]:
    """The request's method and every method it claims through an override header.

    A header may list several (`POST, GET`), and servers join repeated headers
    with commas: each one counts, whichever a framework would pick.
    """
    method: str = environ["REQUEST_METHOD"]
    claimed = [
        part.strip()
        for key in METHOD_OVERRIDE_KEYS
        if key in environ
        for part in str(environ[key]).split(",")
    ]
    return (method, *(part for part in claimed if part))


def return_to_url(public_url: str, environ: WSGIEnvironment) -> str:
    """The public URL of this request, built from the public URL, never from Host."""
    target = environ.get("ory.target") or request_target(environ)
    # A target can only be a path here; refuse anything that parses as another origin.
    if urlsplit(target).netloc or not target.startswith("/") or target.startswith("//"):
        target = "/"
    return public_url + target
