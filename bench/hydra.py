"""The Hydra the benchmark introspects with: ory_wsgi's Hydra stand-in in its own process.

    python bench/hydra.py PORT

Serves the stand-in on 127.0.0.1:PORT and answers one command per line on
stdin, one line on stdout: `token` issues an access token (subject
`bench<n>`, scope `photos.read`, audience `api`, one hour) and prints it;
`calls TOKEN` prints how many introspections that token has cost so far;
`calls` prints the total.
"""

from __future__ import annotations

import sys

from ory_wsgi.testing.hydra import FakeHydra, serve_hydra


def main(port: int) -> None:
    hydra = FakeHydra()
    server = serve_hydra("127.0.0.1", port, hydra=hydra)
    print(f"ready {server.url}", flush=True)
    tokens = 0
    try:
        for line in sys.stdin:
            command, _, argument = line.strip().partition(" ")
            if command == "token":
                tokens += 1
                answer = hydra.issue(
                    f"bench{tokens}", scope=["photos.read"], audience=["api"], ttl=3600
                )
            elif command == "calls":
                calls = hydra.calls(argument) if argument else hydra.introspection_calls
                answer = str(calls)
            else:
                answer = f"unknown command {command!r}"
            print(answer, flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main(int(sys.argv[1]))
