"""The baseline: werkzeug's ProxyMiddleware mounted at "/" in front of the benchmark upstream.

BENCH_UPSTREAM=http://127.0.0.1:3000 gunicorn bench.werkzeug_proxy:app
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.middleware.http_proxy import ProxyMiddleware


def _not_found(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    # Never reached once mounted at "/"; ProxyMiddleware needs an app to wrap.
    start_response("404 Not Found", [("Content-Length", "0")])
    return [b""]


# Host None keeps the client's Host, as ory_wsgi does by default.
app = ProxyMiddleware(_not_found, {"/": {"target": os.environ["BENCH_UPSTREAM"], "host": None}})
# werkzeug turns each mount point into "/<name>/", so "/" becomes "//" and matches
# nothing; mount the options it built at "/" itself so that every path is proxied.
app.targets = {"/": app.targets["//"]}
