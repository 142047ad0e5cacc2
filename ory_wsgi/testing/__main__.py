"""`python -m ory_wsgi.testing`: run the local Ory stand-in until interrupted."""

from __future__ import annotations

import argparse
import sys
import threading

from ory_wsgi.testing.kratos import FakeKratos
from ory_wsgi.testing.server import serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ory_wsgi.testing", description="A local, in-memory Ory (Kratos) stand-in."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4433)
    parser.add_argument("--base-url", help="the URL it emits (default: http://HOST:PORT)")
    parser.add_argument("--cookie-name", default="ory_kratos_session")
    parser.add_argument("--secure-cookies", action="store_true")
    parser.add_argument(
        "--allowed-return-url",
        action="append",
        default=[],
        metavar="URL",
        help="allowed return_to prefix (repeatable)",
    )
    parser.add_argument(
        "--identity",
        action="append",
        default=[],
        metavar="EMAIL:PASSWORD",
        help="an identity to create at start (repeatable)",
    )
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)

    kratos = FakeKratos(
        args.base_url,
        cookie_name=args.cookie_name,
        secure_cookies=args.secure_cookies,
        allowed_return_urls=args.allowed_return_url,
    )
    for spec in args.identity:
        email, separator, password = spec.partition(":")
        if not separator or not email or not password:
            parser.error(f"--identity wants EMAIL:PASSWORD, got {spec!r}")
        kratos.add_identity(email, password)
    server = serve(args.host, args.port, kratos=kratos, quiet=not args.verbose)
    print(f"Ory stand-in listening on {server.url} (base URL {kratos.url})", flush=True)
    print(f"Sign in: {kratos.url}/self-service/login/browser", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
