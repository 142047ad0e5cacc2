"""`RequestFacts` from a WSGI environ: the one reading of a request every handler shares.

    facts = request_facts(environ)                         # proxy, embedded
    facts = request_facts(environ, method=..., target=..., scheme=..., host=...)  # decisions

The path comes from the request line (`RAW_URI`), never from a header, and is
normalised once (`ory_wsgi.paths.normalise_path`); the decisions endpoint
passes what its trusted `X-Forwarded-*` headers say instead. In-process
(`environ["ory.embedded"]`) the rules judge the path after `SCRIPT_NAME`, as
the application routes on it (a target not under it is BadRequest); `target`
stays the whole normalised target. Raises
BadRequest for a target that cannot be read (the adapter answers 400).
"""

from __future__ import annotations

from werkzeug.datastructures import EnvironHeaders

from ory_wsgi.paths import normalise_path
from ory_wsgi.pipeline.state import RequestFacts
from ory_wsgi.upstream.forwarder import request_target
from ory_wsgi.wrappers.path_check import EMBEDDED_KEY, app_relative_path, request_methods
from ory_wsgi.wsgi import WSGIEnvironment


def request_facts(
    environ: WSGIEnvironment,
    *,
    method: str = "",
    target: str = "",
    scheme: str = "",
    host: str = "",
) -> RequestFacts:
    method = method or environ["REQUEST_METHOD"]
    # Every method claimed through an override header (comma lists too), upper-cased.
    claimed = (m.upper() for m in request_methods(environ)[1:])
    target = target or request_target(environ)
    raw_path, _, query = target.partition("?")
    path = checked = normalise_path(raw_path)
    if environ.get(EMBEDDED_KEY):
        # In-process the application routes on the path after its mount point.
        relative = app_relative_path(path.path, environ.get("SCRIPT_NAME", ""))
        if relative != path.path:
            checked = normalise_path(relative or "/")
    return RequestFacts(
        method=method,
        methods=tuple(dict.fromkeys((method, *claimed))),
        scheme=scheme or environ.get("wsgi.url_scheme", "http"),
        host=host or environ.get("HTTP_HOST") or environ.get("SERVER_NAME", ""),
        path=checked,
        query=query,
        target=path.path + (f"?{query}" if query else ""),
        headers=EnvironHeaders(environ),
        remote_addr=environ.get("REMOTE_ADDR", ""),
        request_id=environ.get("ory.request_id", ""),
        environ=environ,
    )
