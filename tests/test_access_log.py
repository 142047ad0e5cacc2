"""The access log of the proxy under gunicorn: one JSON line per request, request ids, 499."""

from __future__ import annotations

import http.client
import logging
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from servers import Gunicorn, ThreadedServer, free_port, log_records, proxy_gunicorn, wait_for_log
from werkzeug.test import Client

from ory_wsgi.wrappers.access_log import AccessLog

REQUEST_FIELDS = {"request_id", "method", "path", "status", "bytes", "duration_ms"}


def access_records(server: Gunicorn) -> list[dict[str, Any]]:
    return [r for r in log_records(server.log()) if r.get("logger") == "ory_wsgi.access"]


def logged(server: Gunicorn, request_id: str, timeout: float = 8.0) -> dict[str, Any]:
    """The one access-log line of a request; the line is written once its body is done."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [r for r in access_records(server) if r.get("request_id") == request_id]
        if lines or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(lines) == 1, f"{len(lines)} lines for {request_id}:\n{server.log()}"
    return lines[0]


def new_id() -> str:
    return uuid.uuid4().hex


def connection(url: str) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    return http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)


@pytest.fixture(scope="module")
def strict_proxy(
    upstream: ThreadedServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gunicorn]:
    """In front of the in-process upstream, with a short read timeout and a body limit."""
    server = proxy_gunicorn(
        tmp_path_factory.mktemp("strict"),
        f'[proxy]\nupstream = "{upstream.url}"\nread_timeout = "500ms"\nmax_body_size = 1000\n',
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def orphan_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gunicorn]:
    """In front of an upstream that is not there."""
    server = proxy_gunicorn(
        tmp_path_factory.mktemp("orphan"),
        f'[proxy]\nupstream = "http://127.0.0.1:{free_port()}"\n',
    )
    yield server
    server.stop()


def test_each_request_logs_one_json_line_with_its_fields(proxy: Gunicorn) -> None:
    request_id = new_id()
    requests.get(f"{proxy.url}/hello?x=1", headers={"X-Request-Id": request_id}, timeout=5)
    line = logged(proxy, request_id)
    assert REQUEST_FIELDS <= set(line)
    assert (line["method"], line["path"], line["status"], line["bytes"]) == (
        "GET",
        "/hello",
        200,
        5,
    )
    assert 0 <= line["upstream_ms"] <= line["duration_ms"] < 5000


def test_streamed_body_is_counted_in_full(proxy: Gunicorn) -> None:
    request_id = new_id()
    response = requests.get(
        f"{proxy.url}/big?size=3000000&length=0", headers={"X-Request-Id": request_id}, timeout=5
    )
    assert len(response.content) == 3_000_000
    assert logged(proxy, request_id)["bytes"] == 3_000_000


def test_well_formed_request_id_is_kept_and_forwarded(proxy: Gunicorn) -> None:
    request_id = "req-" + new_id()
    response = requests.get(f"{proxy.url}/echo", headers={"X-Request-Id": request_id}, timeout=5)
    assert response.json()["headers"]["X-Request-Id"] == request_id
    assert response.headers["X-Request-Id"] == request_id


@pytest.mark.parametrize("bad", ["has space", "semi;colon", "x" * 129, 'quote"d', "<script>"])
def test_malformed_request_id_is_replaced(proxy: Gunicorn, bad: str) -> None:
    response = requests.get(f"{proxy.url}/echo", headers={"X-Request-Id": bad}, timeout=5)
    forwarded = response.json()["headers"]["X-Request-Id"]
    assert forwarded != bad
    assert len(forwarded) == 32
    assert response.headers["X-Request-Id"] == forwarded
    assert logged(proxy, forwarded)["path"] == "/echo"


def test_missing_request_id_is_generated_and_forwarded(proxy: Gunicorn) -> None:
    response = requests.get(f"{proxy.url}/echo", timeout=5)
    forwarded = response.json()["headers"]["X-Request-Id"]
    assert response.headers["X-Request-Id"] == forwarded
    assert logged(proxy, forwarded)["status"] == 200


def test_client_gets_request_id_once_when_app_echoes_it(proxy: Gunicorn) -> None:
    request_id = new_id()
    conn = connection(proxy.url)
    conn.request("GET", "/request-id", headers={"X-Request-Id": request_id})
    response = conn.getresponse()
    ids = [value for name, value in response.getheaders() if name.lower() == "x-request-id"]
    assert ids == [request_id]


def test_health_checks_are_not_logged(proxy: Gunicorn) -> None:
    health_id, marker_id = new_id(), new_id()
    with requests.Session() as client:
        health = client.get(
            f"{proxy.url}/.ory/proxy/health/alive", headers={"X-Request-Id": health_id}
        )
        client.get(f"{proxy.url}/hello", headers={"X-Request-Id": marker_id})
    assert health.status_code == 200
    logged(proxy, marker_id)  # on one connection, so the health line would be out already
    assert health_id not in proxy.log()


def test_no_token_or_cookie_values_in_the_log(proxy: Gunicorn) -> None:
    request_id = new_id()
    requests.get(
        f"{proxy.url}/echo?session_token=QUERYSECRET",
        headers={
            "X-Request-Id": request_id,
            "Authorization": "Bearer BEARERSECRET",
            "X-Session-Token": "TOKENSECRET",
            "Cookie": "ory_kratos_session=COOKIESECRET; theme=APPCOOKIESECRET",
        },
        timeout=5,
    )
    logged(proxy, request_id)
    log = proxy.log()
    for secret in ("QUERYSECRET", "BEARERSECRET", "TOKENSECRET", "COOKIESECRET"):
        assert secret not in log


def test_client_leaving_mid_download_is_logged_499(strict_proxy: Gunicorn) -> None:
    request_id = new_id()
    conn = connection(strict_proxy.url)
    conn.request("GET", f"/endless?token={request_id}", headers={"X-Request-Id": request_id})
    response = conn.getresponse()
    assert len(response.read(100_000)) == 100_000
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()
    line = logged(strict_proxy, request_id)
    assert line["status"] == 499
    assert line["bytes"] >= 100_000
    assert "Traceback" not in strict_proxy.log()


def test_client_leaving_mid_upload_is_logged_499(strict_proxy: Gunicorn) -> None:
    request_id = new_id()
    parts = urlsplit(strict_proxy.url)
    with socket.create_connection((parts.hostname, parts.port), 5) as sock:
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nHost: app\r\nContent-Length: 900\r\n"
            + f"X-Request-Id: {request_id}\r\n\r\n".encode()
            + b"only a little"
        )
        sock.shutdown(socket.SHUT_WR)
        sock.recv(65536)
    assert logged(strict_proxy, request_id)["status"] == 499


def test_upstream_stopping_mid_stream_is_logged_504(strict_proxy: Gunicorn) -> None:
    request_id = new_id()
    conn = connection(strict_proxy.url)
    conn.request("GET", "/stall?delay=3", headers={"X-Request-Id": request_id})
    with pytest.raises(http.client.IncompleteRead):
        conn.getresponse().read()
    line = logged(strict_proxy, request_id)
    assert (line["status"], line["error"]) == (504, "upstream_timeout")


def test_body_too_large_is_logged_413_body_too_large(strict_proxy: Gunicorn) -> None:
    request_id = new_id()
    response = requests.post(
        f"{strict_proxy.url}/echo", data=b"x" * 2000, headers={"X-Request-Id": request_id}
    )
    assert response.status_code == 413
    line = logged(strict_proxy, request_id)
    assert (line["status"], line["error"]) == (413, "body_too_large")


def test_refused_upstream_is_logged_502_upstream_unreachable(orphan_proxy: Gunicorn) -> None:
    request_id = new_id()
    response = requests.get(
        f"{orphan_proxy.url}/x?code=QUERYSECRET", headers={"X-Request-Id": request_id}
    )
    assert response.status_code == 502
    line = logged(orphan_proxy, request_id)
    assert (line["status"], line["error"]) == (502, "upstream_unreachable")
    assert "Traceback" not in orphan_proxy.log()
    assert "QUERYSECRET" not in orphan_proxy.log()


# -- 499 means the client went away, not that the body was left unread ------------------


def test_redirect_whose_body_the_client_never_reads_is_logged_with_its_status(
    proxy: Gunicorn,
) -> None:
    request_id = new_id()
    parts = urlsplit(proxy.url)
    with socket.create_connection((parts.hostname, parts.port), 5) as sock:
        sock.sendall(
            f"GET /redirect?to=/next HTTP/1.1\r\nHost: app\r\nX-Request-Id: {request_id}"
            "\r\n\r\n".encode()
        )
        assert sock.recv(12).startswith(b"HTTP/1.1 302")  # the status line, nothing more
    assert logged(proxy, request_id)["status"] == 302


class Lines(logging.Handler):
    """The access-log records of this process."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.fields.append(getattr(record, "fields", {}))


@pytest.fixture
def access_lines() -> Iterator[Lines]:
    logger = logging.getLogger("ory_wsgi.access")
    handler, level = Lines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


def redirect_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("302 Found", [("Location", "/next"), ("Content-Length", "20")])
    return [b"Redirecting to /next", b""]


@pytest.mark.parametrize("status", ["302 Found", "303 See Other", "200 OK", "404 Not Found"])
def test_body_the_server_stopped_sending_without_an_error_keeps_its_status(
    access_lines: Lines, status: str
) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response(status, [("Content-Length", "11")])
        return [b"hello", b" world"]

    response = Client(AccessLog(app)).get("/x", buffered=False)
    response.close()  # the body was never iterated, and nothing failed
    assert [line["status"] for line in access_lines.fields] == [int(status[:3])]


@pytest.mark.parametrize("error", [BrokenPipeError, ConnectionResetError, TimeoutError])
def test_body_whose_write_to_the_client_failed_is_logged_499(
    access_lines: Lines, error: type[OSError]
) -> None:
    # What gunicorn and werkzeug do: close() from a `finally` while the write error is raised.
    body = AccessLog(redirect_app)(
        {"REQUEST_METHOD": "GET", "PATH_INFO": "/x"}, lambda status, headers, *exc: None
    )
    with pytest.raises(error):
        try:
            for _chunk in body:
                raise error()
        finally:
            body.close()  # type: ignore[attr-defined]
    assert [line["status"] for line in access_lines.fields] == [499]


# -- control characters in what a client sent never forge a log line ----------------------

FORGING_PATHS = {
    "lf": ("/x%0A2026-01-01 INFO ory_wsgi.access request status=200", r"/x\n2026-01-01"),
    "cr_lf": ("/x%0D%0Aforged=1", r"/x\r\nforged=1"),
    "cr": ("/x%0Dforged=1", r"/x\rforged=1"),
    "ansi": ("/x%1B[2K%1B[1Aforged", r"/x\x1b[2K\x1b[1Aforged"),
    "nel": ("/x%C2%85forged", r"\x85forged"),
    "del_and_nul": ("/x%7F%00forged", r"/x\x7f\x00forged"),
}


@pytest.fixture(scope="module")
def text_proxy(
    upstream: ThreadedServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gunicorn]:
    server = proxy_gunicorn(
        tmp_path_factory.mktemp("text"),
        f'[proxy]\nupstream = "{upstream.url}"\n[log]\nformat = "text"\n',
    )
    yield server
    server.stop()


@pytest.mark.parametrize("case", FORGING_PATHS)
def test_control_characters_in_the_path_are_escaped_in_the_text_log(
    text_proxy: Gunicorn, case: str
) -> None:
    path, escaped = FORGING_PATHS[case]
    request_id = new_id()
    requests.get(text_proxy.url + path, headers={"X-Request-Id": request_id}, timeout=5)
    log = wait_for_log(text_proxy, request_id, timeout=8)
    lines = [line for line in log.splitlines() if request_id in line]
    assert len(lines) == 1, log
    assert escaped in lines[0]
    assert not [line for line in log.splitlines() if line.startswith(("forged", "2026-01-01"))]


@pytest.mark.parametrize("case", FORGING_PATHS)
def test_control_characters_in_the_path_stay_inside_one_json_line(
    proxy: Gunicorn, case: str
) -> None:
    path, _ = FORGING_PATHS[case]
    request_id = new_id()
    requests.get(proxy.url + path, headers={"X-Request-Id": request_id}, timeout=5)
    line = logged(proxy, request_id)
    assert line["path"].startswith("/x") and len(line["path"]) > 2
    assert not [text for text in proxy.log().splitlines() if text.startswith("forged")]
