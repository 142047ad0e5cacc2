"""The demo as a product: one log line per request, headers once, nothing left behind."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from types import SimpleNamespace

import requests
from ory_flows import login
from servers import ROOT, ThreadedServer, free_port, wait_for_port

from ory_wsgi.demo import ADMIN_PERMISSION, DEMO_EMAIL, DEMO_PASSWORD, GUEST_EMAIL, Demo
from ory_wsgi.devserver import OwnDateAndServer
from ory_wsgi.wsgi import StartResponse, WSGIEnvironment


def header_counts(url: str, path: str = "/") -> dict[str, int]:
    parts = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(parts[0], int(parts[1]), timeout=5)
    connection.request("GET", path)
    answer = connection.getresponse()
    answer.read()
    connection.close()
    counts: dict[str, int] = {}
    for name, _ in answer.getheaders():
        counts[name.lower()] = counts.get(name.lower(), 0) + 1
    return counts


def test_the_development_server_sends_date_and_server_once() -> None:
    def upstream_like(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response(
            "200 OK",
            [("Date", "Thu, 01 Jan 1970 00:00:00 GMT"), ("Server", "upstream"), ("X-Kept", "1")],
        )
        return [b"ok"]

    server = ThreadedServer(OwnDateAndServer(upstream_like))
    try:
        counts = header_counts(server.url)
        answer = requests.get(server.url, timeout=5)
    finally:
        server.stop()
    assert counts["date"] == 1 and counts["server"] == 1 and counts["x-kept"] == 1
    assert answer.headers["Server"].startswith("Werkzeug/")
    assert answer.headers["Date"] != "Thu, 01 Jan 1970 00:00:00 GMT"


def test_demo_pages_carry_date_and_server_once_and_its_keys_go_with_it() -> None:
    demo = Demo(port=free_port())
    demo.serve_in_background()
    state = Path(demo.state_dir)
    try:
        for path in ("/", "/favicon.ico", "/.ory/ui/login", "/.ory/jwks.json"):
            counts = header_counts(demo.public_url.replace("localhost", "127.0.0.1"), path)
            assert counts.get("date") == 1 and counts.get("server") == 1, (path, counts)
        assert any(state.iterdir())
    finally:
        demo.close()
    assert not state.exists()


def test_demo_logs_one_line_per_request_and_cleans_up_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "ory_wsgi.cli", "demo", "--port", str(port)],
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    try:
        wait_for_port(port, process=process)
        assert len(list(tmp_path.iterdir())) == 1
        paths = ["/", "/favicon.ico", "/members", "/.ory/self-service/login/browser"]
        for path in paths:
            requests.get(f"http://127.0.0.1:{port}{path}", allow_redirects=False, timeout=10)
    finally:
        process.send_signal(signal.SIGINT)
        _, output = process.communicate(timeout=20)
    assert process.returncode == 0, output
    lines = [line for line in output.splitlines() if "ory_wsgi.access" in line]
    assert [line.split(" path=")[1].split()[0] for line in lines] == paths, output
    assert "HTTP/1.1" not in output  # werkzeug's own request lines
    assert "Stopped" in output
    assert list(tmp_path.iterdir()) == []


def test_demo_on_a_busy_port_says_so_and_leaves_nothing(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "ory_wsgi.cli", "demo", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=ROOT,
            env={**os.environ, "TMPDIR": str(tmp_path)},
        )
    assert result.returncode == 1
    assert f"Port {port} is in use" in result.stderr and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_demo_admin_area_lets_the_demo_user_in_and_refuses_the_guest_with_403() -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    demo = Demo(port=port, public_url=base)
    demo.serve_in_background()
    try:
        assert demo.keto is not None
        keto = demo.keto.keto
        home = requests.get(f"{base}/", timeout=10).text
        assert 'href="/admin"' in home and GUEST_EMAIL in home and DEMO_EMAIL in home
        assert "403" in home

        anonymous = requests.get(
            f"{base}/admin", headers={"Accept": "text/html"}, allow_redirects=False, timeout=10
        )
        assert anonymous.status_code == 303
        assert anonymous.headers["Location"].startswith(f"{base}/.ory/self-service/login/browser")
        assert keto.check_calls == 0  # no session: Keto is not asked

        admin = login(SimpleNamespace(url=base), None, DEMO_EMAIL, DEMO_PASSWORD)
        allowed = admin.get(f"{base}/admin", timeout=10)
        assert allowed.status_code == 200
        namespace, obj, relation = ADMIN_PERMISSION
        assert f"Keto allowed <code>{namespace}:{obj}#{relation}@" in allowed.text
        assert keto.check_calls == 1

        guest = login(SimpleNamespace(url=base), None, GUEST_EMAIL, DEMO_PASSWORD)
        assert guest.get(f"{base}/members", timeout=10).status_code == 200
        refused = guest.get(f"{base}/admin/settings", timeout=10)
        assert refused.status_code == 403
        assert "Admin area" not in refused.text  # the app never saw it
        assert keto.check_calls == 2
    finally:
        demo.close()
