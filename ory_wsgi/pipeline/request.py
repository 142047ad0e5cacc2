"""`RequestFacts` from a WSGI environ: the one reading of a request every handler shares.

    facts = request_facts(environ)                         # proxy, embedded
    facts = request_facts(environ, method=..., target=..., scheme=..., host=...)  # decisions

The path comes from the request line (`RAW_URI`), never from a header, and is
normalised once (`ory_wsgi.paths.normalise_path`); the decisions endpoint
passes what its trusted `X-Forwarded-*` headers say instead. Raises
BadRequest for a target that cannot be read (the adapter answers 400).
"""

from __future__ import annotations

from werkzeug.datastructures import EnvironHeaders

from ory_wsgi.forwarder import request_target
from ory_wsgi.paths import normalise_path
from ory_wsgi.pipeline.state import RequestFacts
from ory_wsgi.wsgi import WSGIEnvironment

# Headers with which frameworks (Rails, Laravel, Express, Symfony) let a
# request claim another method: a method-limited rule must see that claim too.
METHOD_OVERRIDE_KEYS = (
    "HTTP_X_HTTP_METHOD_OVERRIDE",
    "HTTP_X_HTTP_METHOD",
    "HTTP_X_METHOD_OVERRIDE",
)


def request_facts(
    environ: WSGIEnvironment,
    *,
    method: str = "",
    target: str = "",
    scheme: str = "",
    host: str = "",
) -> RequestFacts:
    method = method or environ["REQUEST_METHOD"]
    claimed = tuple(
        upper
        for key in METHOD_OVERRIDE_KEYS
        if key in environ and (upper := str(environ[key]).strip().upper()) and upper != method
    )
    target = target or request_target(environ)
    raw_path, _, query = target.partition("?")
    path = normalise_path(raw_path)
    return RequestFacts(
        method=method,
        methods=(method, *dict.fromkeys(claimed)),
        scheme=scheme or environ.get("wsgi.url_scheme", "http"),
        host=host or environ.get("HTTP_HOST") or environ.get("SERVER_NAME", ""),
        path=path,
        query=query,
        target=path.path + (f"?{query}" if query else ""),
        headers=EnvironHeaders(environ),
        remote_addr=environ.get("REMOTE_ADDR", ""),
        request_id=environ.get("ory.request_id", ""),
        environ=environ,
    )
