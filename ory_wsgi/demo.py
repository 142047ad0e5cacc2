"""`ory-wsgi demo`: the proxy in front of a sample app, all on loopback, no internet."""

from __future__ import annotations

import html
import sys
import threading
from collections.abc import Iterable

from werkzeug.serving import make_server

from ory_wsgi.app import build_app
from ory_wsgi.settings import load_settings
from ory_wsgi.wsgi import StartResponse, WSGIEnvironment

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>ory_wsgi demo app</title>
<style>body{{font-family:system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem}}
pre{{background:#f4f4f4;padding:1rem;overflow:auto}}</style></head>
<body><h1>The sample app behind ory_wsgi</h1>
<p>This page is served by a plain WSGI app on {upstream}; you reached it through the proxy.</p>
<h2>What the app received</h2>
<pre>{request}</pre>
</body></html>
"""


def sample_app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """A page that shows what the proxy sent the app."""
    lines = [f"{environ['REQUEST_METHOD']} {environ.get('RAW_URI') or environ.get('PATH_INFO')}"]
    for key in sorted(environ):
        if key.startswith("HTTP_"):
            lines.append(f"{key[5:].replace('_', '-').title()}: {environ[key]}")
    if "HTTP_AUTHORIZATION" not in environ:
        lines.append("(no Authorization header: you are not logged in)")
    upstream = f"{environ.get('SERVER_NAME')}:{environ.get('SERVER_PORT')}"
    body = PAGE.format(upstream=upstream, request=html.escape("\n".join(lines))).encode()
    start_response(
        "200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body)))]
    )
    return [body]


def run_demo(port: int = 4000, host: str = "127.0.0.1") -> int:
    """Start the sample app on a free port and the proxy on `port`; serve until Ctrl-C."""
    app_server = make_server(host, 0, sample_app, threaded=True)
    threading.Thread(target=app_server.serve_forever, daemon=True).start()
    upstream = f"http://{host}:{app_server.server_port}"
    public_url = f"http://localhost:{port}"
    settings = load_settings(
        None,
        env={},
        overrides={
            "proxy": {"upstream": upstream, "public_url": public_url},
            "server": {"host": host, "port": port},
            "log": {"format": "text"},
        },
    )
    proxy = make_server(host, port, build_app(settings), threaded=True)
    print(
        f"ory-wsgi demo\n  sample app: {upstream}\n  open:       {public_url}/\n"
        "Press Ctrl-C to stop.",
        file=sys.stderr,
        flush=True,
    )
    try:
        proxy.serve_forever()
    finally:
        proxy.server_close()
        app_server.shutdown()
    return 0
