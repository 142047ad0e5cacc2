"""Real servers on free loopback ports: gunicorn processes and werkzeug threads."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from werkzeug.serving import make_server

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    port: int, timeout: float = 15.0, process: subprocess.Popen[Any] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout}s")


def wait_for_log(server: Gunicorn, text: str, timeout: float = 5.0) -> str:
    """`server`'s log once `text` is in it, or after `timeout` (the caller asserts on it)."""
    deadline = time.monotonic() + timeout
    while text not in server.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    return server.log()


class Gunicorn:
    """A gunicorn process serving `app_spec`; its stderr is kept for assertions."""

    def __init__(
        self,
        app_spec: str,
        *args: str,
        workers: int = 1,
        threads: int = 4,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"gunicorn-{self.port}.log"
        self.log_file = open(self.log_path, "wb")
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            "--bind",
            f"127.0.0.1:{self.port}",
            "--workers",
            str(workers),
            "--no-control-socket",
            "--graceful-timeout",
            "5",
        ]
        if threads > 1:
            command += ["--worker-class", "gthread", "--threads", str(threads)]
        command += [*args, app_spec]
        full_env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}", **(env or {})}
        self.process = subprocess.Popen(
            command, stdout=self.log_file, stderr=subprocess.STDOUT, env=full_env, cwd=cwd or ROOT
        )
        try:
            wait_for_port(self.port, process=self.process)
        except RuntimeError:
            self.stop()
            raise RuntimeError(f"gunicorn did not start:\n{self.log()}") from None

    def log(self) -> str:
        self.log_file.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log_file.close()


class RedisServer:
    """A real redis-server on a free loopback port with its own directory, no persistence.

    `stop()` and `start()` again keep the port, so clients configured with
    `url` reconnect to the restarted server; `pause()` and `resume()` make it
    hang instead (fault tests).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--save",
                "",
                "--appendonly",
                "no",
                "--logfile",
                str(self.directory / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        wait_for_port(self.port, process=self.process)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open, nothing answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


class RedisClusterServers:
    """A real Redis Cluster: `size` redis-server masters (no replicas) on free loopback ports,
    each in its own directory, joined by `redis-cli --cluster create`.

    `url` names two of them as seed nodes (`[session_cache] redis_cluster = true`);
    `client()` is a redis-py cluster client; `flush()` empties every node.
    """

    def __init__(self, directory: Path, size: int = 3) -> None:
        self.ports = [free_port() for _ in range(size)]
        self.processes: list[subprocess.Popen[bytes]] = []
        try:
            for port in self.ports:
                node_dir = directory / str(port)
                node_dir.mkdir()
                command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1"]
                command += ["--dir", str(node_dir), "--save", "", "--appendonly", "no"]
                # The cluster bus on its own free port (by default port + 10000, maybe taken).
                command += ["--cluster-enabled", "yes", "--cluster-port", str(free_port())]
                command += ["--cluster-node-timeout", "2000"]
                command += ["--logfile", str(node_dir / "redis.log")]
                process = subprocess.Popen(
                    command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
                )
                self.processes.append(process)
                wait_for_port(port, process=process)
            nodes = [f"127.0.0.1:{port}" for port in self.ports]
            subprocess.run(
                [
                    "redis-cli",
                    "--cluster",
                    "create",
                    *nodes,
                    "--cluster-replicas",
                    "0",
                    "--cluster-yes",
                ],
                check=True,
                capture_output=True,
                timeout=30,
            )
            self._wait_until_ok()
        except BaseException:
            self.stop()  # no node outlives a cluster that did not form
            raise
        self.url = f"redis://{nodes[0]},{nodes[1]}"

    def _wait_until_ok(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = [
                subprocess.run(
                    ["redis-cli", "-p", str(port), "cluster", "info"],
                    capture_output=True,
                    text=True,
                    check=False,
                ).stdout
                for port in self.ports
            ]
            if all("cluster_state:ok" in state for state in states):
                return
            time.sleep(0.1)
        raise RuntimeError("the redis cluster did not reach cluster_state:ok")

    def client(self) -> Any:
        import redis.cluster

        return redis.cluster.RedisCluster(host="127.0.0.1", port=self.ports[0])

    def flush(self) -> None:
        for port in self.ports:
            subprocess.run(
                ["redis-cli", "-p", str(port), "flushall"], check=True, capture_output=True
            )

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()


class ThreadedServer:
    """A werkzeug server in a thread of the test process."""

    def __init__(self, app: Any, poll_interval: float = 0.5) -> None:
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.port = self.server.server_port
        self.url = f"http://127.0.0.1:{self.port}"
        # poll_interval is how long stop() may wait for the serving loop to notice.
        self.thread = threading.Thread(
            target=self.server.serve_forever, args=(poll_interval,), daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def gunicorn(app_spec: str, *args: str, **kwargs: Any) -> Iterator[Gunicorn]:
    server = Gunicorn(app_spec, *args, **kwargs)
    try:
        yield server
    finally:
        server.stop()


def proxy_gunicorn(
    directory: Path, config: str, *args: str, name: str = "ory.toml", **kwargs: Any
) -> Gunicorn:
    """The proxy under gunicorn: `config` (TOML text) in `directory`/`name`, run from there."""
    path = directory / name
    path.write_text(config)
    kwargs.setdefault("cwd", directory)
    return Gunicorn(f'ory_wsgi:make_app("{path}")', *args, **kwargs)


def toml_lines(settings: dict[str, Any]) -> str:
    """`key = value` lines of a TOML table for strings, numbers and booleans (`fleet_redis`)."""
    return "".join(f"{key} = {json.dumps(value)}\n" for key, value in settings.items())


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def worker_pids(master: int) -> list[int]:
    """The pids of a gunicorn master's workers (its child processes)."""
    pids: list[int] = []
    for children in Path(f"/proc/{master}/task").glob("*/children"):
        pids += [int(pid) for pid in children.read_text().split()]
    return pids


def rss_bytes(pid: int) -> int:
    """The resident memory of a process now (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def log_records(text: str) -> list[dict[str, Any]]:
    """The JSON lines of a server's log output, other lines skipped."""
    records = []
    for line in text.splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                records.append(json.loads(line))
    return records


# (index of the connection, index of the request on it) -> the bytes to answer, or None to hang up.
Script = Callable[[int, int], bytes | None]


class ScriptedUpstream:
    """A raw HTTP/1.1 server answering bodiless requests as `script` says; counts connections."""

    def __init__(self, script: Script, delay: float = 0.0, hang_up: bool = False) -> None:
        self.script = script
        self.delay = delay
        self.hang_up = hang_up  # close the connection after each answer
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.connections = 0
        self.requests = 0  # request heads received, on any connection
        self.running = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while self.running:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            index = self.connections
            self.connections += 1
            threading.Thread(target=self._serve, args=(sock, index), daemon=True).start()

    def _serve(self, sock: socket.socket, index: int) -> None:
        with sock:
            buffer = b""
            request = 0
            while True:
                while b"\r\n\r\n" not in buffer:
                    try:
                        data = sock.recv(65536)
                    except OSError:
                        return
                    if not data:
                        return
                    buffer += data
                _, buffer = buffer.split(b"\r\n\r\n", 1)
                self.requests += 1
                answer = self.script(index, request)
                request += 1
                if answer is None:
                    return
                time.sleep(self.delay)
                try:
                    sock.sendall(answer)
                except OSError:
                    return
                if self.hang_up:
                    return

    def stop(self) -> None:
        self.running = False
        self.listener.close()
