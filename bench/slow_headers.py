"""How many slow-header connections take every thread of the shipped gunicorn config.

    .venv/bin/python bench/slow_headers.py [--workers 2] [--max 160] [--step 8]

Starts the proxy with `-c python:ory_wsgi.gunicorn_conf` on a free loopback
port, then opens slow clients in steps: each sends a request line and then
one header byte every 2 s, never finishing its headers (a slowloris). After
each step it sends 10 ordinary requests (health checks, 3 s timeout each)
and prints how many were answered. Bounded: at most `--max` slow
connections, about a minute in all; every socket and process is closed at
the end.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROBE = b"GET /.ory/proxy/health/alive HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answered(port: int, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout) as sock:
            sock.sendall(PROBE)
            return sock.recv(12).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


class Slowloris:
    """Connections that send their headers one byte every `pause` seconds, for ever."""

    def __init__(self, port: int, pause: float = 2.0) -> None:
        self.port = port
        self.pause = pause
        self.sockets: list[socket.socket] = []
        self.running = True
        threading.Thread(target=self._drip, daemon=True).start()

    def open(self, count: int) -> None:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", self.port), 5)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ")
            self.sockets.append(sock)

    def _drip(self) -> None:
        while self.running:
            time.sleep(self.pause)
            for sock in list(self.sockets):
                try:
                    sock.send(b"a")
                except OSError:
                    self.sockets.remove(sock)

    def close(self) -> None:
        self.running = False
        for sock in self.sockets:
            sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--max", type=int, default=160)
    parser.add_argument("--step", type=int, default=8)
    args = parser.parse_args()

    port = free_port()
    directory = Path(tempfile.mkdtemp(prefix="slow-headers-"))
    config = directory / "ory.toml"
    config.write_text(f'[proxy]\nupstream = "http://127.0.0.1:{free_port()}"\n')
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PORT": str(port),
        "WEB_CONCURRENCY": str(args.workers),
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "python:ory_wsgi.gunicorn_conf",
            "--bind",
            f"127.0.0.1:{port}",
            "--no-control-socket",
            f'ory_wsgi:make_app("{config}")',
        ],
        cwd=directory,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    slow = Slowloris(port)
    try:
        deadline = time.monotonic() + 20
        while not answered(port, 0.5):
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("gunicorn did not start")
            time.sleep(0.2)
        print(f"workers={args.workers} threads=32 (the shipped config)")
        print("slow connections  answered of 10")
        count = 0
        while count <= args.max:
            time.sleep(3)  # past gthread's 5 s first-byte wait for the newest ones
            ok = sum(answered(port) for _ in range(10))
            print(f"{count:16d}  {ok:2d}", flush=True)
            if ok == 0:
                break
            slow.open(args.step)
            count += args.step
    finally:
        slow.close()
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    main()
