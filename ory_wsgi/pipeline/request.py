"""`RequestFacts` from a WSGI environ: the one reading of a request every handler shares.

    facts = request_facts(environ)                         # proxy, embedded
    facts = request_facts(environ, method=..., target=..., scheme=..., host=...)  # decisions
    target = read_target(environ)                          # any layer: the raw target, read once

The path comes from the request line (`RAW_URI`), never from a header, and is
normalised once (`ory_wsgi.paths.normalise_path`); the decisions endpoint
passes what its trusted `X-Forwarded-*` headers say instead. In-process
(`environ["ory.embedded"]`) the rules judge the path after `SCRIPT_NAME`, as
the application routes on it (a target not under it is BadRequest); `target`
stays the whole normalised target. Raises
BadRequest for a target that cannot be read (the adapter answers 400).

`read_target` is `ory_wsgi.upstream.forwarder.request_target` read once per request:
the layers that route on the raw target (decisions endpoint, `/.ory` route,
the pipeline) share one reading, kept in the environ next to the request
line it was read from, so a copy of the environ with another request line
(the decisions endpoint's) reads its own.
"""

from __future__ import annotations

import re

from werkzeug.datastructures import EnvironHeaders

from ory_wsgi.ory.client import Credentials
from ory_wsgi.overrides import request_methods
from ory_wsgi.paths import EMBEDDED_KEY, NormalisedPath, app_relative_path, normalise_path
from ory_wsgi.pipeline.state import RequestFacts
from ory_wsgi.upstream.forwarder import request_target
from ory_wsgi.wsgi import WSGIEnvironment

TARGET_KEY = "ory.raw_target"
# A path every reader reads alike: segments of unreserved characters, none of
# them `.`/`..`, none ending in a dot, no empty segment but a trailing slash; no
# escape, `;`, backslash, control or space. `normalise_path` would return it
# as it is, with itself as its only reading and nothing suspicious in it.
_PLAIN_PATH = re.compile(r"/|(?:/[A-Za-z0-9_~-]+(?:\.[A-Za-z0-9_~-]+)*)+/?")


def read_target(environ: WSGIEnvironment) -> str:
    """`request_target(environ)`, computed once for the request line it came from."""
    source = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if not source:
        return request_target(environ)
    cached = environ.get(TARGET_KEY)
    if cached is not None and cached[0] == source:
        return str(cached[1])
    target = request_target(environ)
    environ[TARGET_KEY] = (source, target)
    return target


def read_path(raw: str) -> NormalisedPath:
    """`normalise_path(raw)`, without its work for a path that has a single reading."""
    if _PLAIN_PATH.fullmatch(raw):
        return NormalisedPath(path=raw, views=(raw,), suspicious=False)
    return normalise_path(raw)


def request_facts(
    environ: WSGIEnvironment,
    *,
    method: str = "",
    target: str = "",
    scheme: str = "",
    host: str = "",
    credentials: Credentials | None = None,
    anonymous: bool = False,
) -> RequestFacts:
    method = method or environ["REQUEST_METHOD"]
    target = target or read_target(environ)
    raw_path, _, query = target.partition("?")
    path = checked = read_path(raw_path)
    if environ.get(EMBEDDED_KEY):
        # In-process the application routes on the path after its mount point.
        relative = app_relative_path(path.path, environ.get("SCRIPT_NAME", ""))
        if relative != path.path:
            checked = read_path(relative or "/")
    methods = request_methods(environ)
    if len(methods) > 1:
        # Every method claimed through an override header (comma lists too), upper-cased.
        methods = tuple(dict.fromkeys((method, *(m.upper() for m in methods[1:]))))
    else:
        methods = (method,)
    return RequestFacts(
        method=method,
        methods=methods,
        scheme=scheme or environ.get("wsgi.url_scheme", "http"),
        host=host or environ.get("HTTP_HOST") or environ.get("SERVER_NAME", ""),
        path=checked,
        query=query,
        target=path.path + (f"?{query}" if query else ""),
        headers=EnvironHeaders(environ),
        remote_addr=environ.get("REMOTE_ADDR", ""),
        request_id=environ.get("ory.request_id", ""),
        environ=environ,
        credentials=credentials,
        anonymous=anonymous,
    )
