"""The Keto the benchmark checks permissions with: ory_wsgi's Keto stand-in in its own process.

    python bench/keto.py PORT

Serves `ory_wsgi.testing.keto` on 127.0.0.1:PORT and answers one command per
line on stdin, one line on stdout (as bench/kratos.py does): `allow NAMESPACE
OBJECT RELATION SUBJECT` adds that relation tuple and prints `ok`; `checks`
prints how many checks have been answered so far.
"""

from __future__ import annotations

import sys

from ory_wsgi.testing.keto import FakeKeto, serve_keto


def main(port: int) -> None:
    keto = FakeKeto()
    server = serve_keto("127.0.0.1", port, keto=keto)
    print(f"ready {server.url}", flush=True)
    try:
        for line in sys.stdin:
            command, *arguments = line.split()
            if command == "allow" and len(arguments) == 4:
                namespace, obj, relation, subject = arguments
                keto.add(namespace, obj, relation, subject_id=subject)
                answer = "ok"
            elif command == "checks":
                answer = str(keto.check_calls)
            else:
                answer = f"unknown command {line.strip()!r}"
            print(answer, flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main(int(sys.argv[1]))
