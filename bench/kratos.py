"""The Ory the benchmark logs in with: ory_wsgi's Kratos stand-in in its own process.

    python bench/kratos.py PORT

Serves the stand-in on 127.0.0.1:PORT and answers one command per line on
stdin, one line on stdout: `session` creates an identity and a session and
prints its `ory_st_` token; `whoami TOKEN` prints how many whoami calls that
token has cost so far; `whoami` prints the total.
"""

from __future__ import annotations

import sys

from ory_wsgi.testing import FakeKratos
from ory_wsgi.testing.server import serve


def main(port: int) -> None:
    kratos = FakeKratos(f"http://127.0.0.1:{port}")
    server = serve("127.0.0.1", port, kratos=kratos)
    print(f"ready {server.url}", flush=True)
    sessions = 0
    try:
        for line in sys.stdin:
            command, _, argument = line.strip().partition(" ")
            if command == "session":
                sessions += 1
                identity = kratos.add_identity(f"bench{sessions}@example.com", "not a secret")
                answer = kratos.create_session(identity["id"]).token
            elif command == "whoami":
                calls = kratos.whoami_calls_for(argument) if argument else kratos.whoami_calls
                answer = str(calls)
            else:
                answer = f"unknown command {command!r}"
            print(answer, flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main(int(sys.argv[1]))
