"""An https upstream signed by a private CA, and one that demands a client certificate (mTLS).

The upstreams are real: gunicorn serving tests/upstream_app.py with
`--certfile/--keyfile` (and `--cert-reqs 2 --ca-certs` for mTLS), and
websockets' server over TLS; the CA and every certificate are made here.
"""

from __future__ import annotations

import hashlib
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from certs import TestCA
from conftest import ProxyFactory
from servers import ROOT, Gunicorn, wait_for_log
from websockets.sync.client import connect
from ws_echo import EchoApp

from ory_wsgi import make_app
from ory_wsgi.errors import ConfigError


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def client_cert(ca: TestCA) -> tuple[Path, Path]:
    """The proxy's client certificate, issued by the CA the mTLS app trusts."""
    return ca.issue("proxy-client", "ory-wsgi proxy", client=True)


def https_app(ca: TestCA, *args: str) -> Gunicorn:
    cert, key = ca.issue("app", "127.0.0.1", "app.internal")
    return Gunicorn(
        "upstream_app:app", "--certfile", str(cert), "--keyfile", str(key), *args, threads=8
    )


@pytest.fixture(scope="module")
def tls_app(ca: TestCA) -> Iterator[str]:
    """The test app over TLS, its certificate from the private CA: its https URL."""
    server = https_app(ca)
    yield f"https://127.0.0.1:{server.port}"
    server.stop()


@pytest.fixture(scope="module")
def mtls_app(ca: TestCA) -> Iterator[str]:
    """The test app over TLS, refusing any client without a certificate from the CA."""
    server = https_app(ca, "--cert-reqs", "2", "--ca-certs", str(ca.cert))
    yield f"https://127.0.0.1:{server.port}"
    server.stop()


def config(upstream: str, **tls: str | Path) -> str:
    lines = [f'upstream = "{upstream}"', 'read_timeout = "5s"']
    lines += [f'upstream_{key} = "{value}"' for key, value in tls.items()]
    return "[proxy]\n" + "\n".join(lines) + "\n"


def test_an_app_signed_by_a_private_ca_is_reached_with_upstream_ca_file(
    start_proxy: ProxyFactory, tls_app: str, ca: TestCA
) -> None:
    proxy = start_proxy(config(tls_app, ca_file=ca.cert))
    answer = requests.get(f"{proxy.url}/echo/x?q=1", timeout=10)
    assert answer.status_code == 200
    assert answer.json()["raw_uri"] == "/echo/x?q=1"
    assert answer.json()["headers"]["Host"] == f"127.0.0.1:{proxy.port}"
    # Keep-alive over TLS: the second request goes over the pooled connection.
    assert requests.get(f"{proxy.url}/echo/y", timeout=10).status_code == 200


def test_events_and_big_bodies_stream_through_a_tls_upstream(
    start_proxy: ProxyFactory, tls_app: str, ca: TestCA
) -> None:
    proxy = start_proxy(config(tls_app, ca_file=ca.cert))
    with requests.get(f"{proxy.url}/sse?count=2&delay=2", stream=True, timeout=10) as events:
        started = time.monotonic()
        first = next(events.iter_content(chunk_size=None))
        assert first.startswith(b"data: event 0")
        assert time.monotonic() - started < 1.5, "the first event waited for the next one"
    size = 8 * 1024 * 1024 + 123
    digest = hashlib.sha256()
    with requests.get(f"{proxy.url}/big?size={size}", stream=True, timeout=30) as big:
        for part in big.iter_content(65536):
            digest.update(part)
    assert digest.hexdigest() == hashlib.sha256(b"x" * size).hexdigest()
    upload = b"u" * (3 * 1024 * 1024)
    echoed = requests.post(f"{proxy.url}/echo", data=iter([upload]), timeout=30).json()
    assert echoed["sha256"] == hashlib.sha256(upload).hexdigest()


@pytest.mark.parametrize("which", ["system CAs", "another private CA"])
def test_an_app_whose_ca_is_not_trusted_gets_502_and_a_log_line_saying_why(
    start_proxy: ProxyFactory, tls_app: str, tmp_path: Path, which: str
) -> None:
    tls = {} if which == "system CAs" else {"ca_file": TestCA(tmp_path, "Other CA").cert}
    proxy = start_proxy(config(tls_app, **tls))
    answer = requests.get(f"{proxy.url}/echo", timeout=10)
    assert answer.status_code == 502
    assert "certificate" not in answer.text  # the details are for the operator's log
    log = wait_for_log(proxy, "upstream_unreachable")
    (line,) = [line for line in log.splitlines() if "upstream_unreachable" in line]
    assert "certificate verify failed" in line
    assert "upstream_ca_file" in line


def test_upstream_server_name_is_the_name_verified_and_sent_as_sni(
    start_proxy: ProxyFactory, tls_app: str, ca: TestCA
) -> None:
    named = start_proxy(config(tls_app, ca_file=ca.cert, server_name="app.internal"))
    assert requests.get(f"{named.url}/echo", timeout=10).status_code == 200
    wrong = start_proxy(config(tls_app, ca_file=ca.cert, server_name="billing.internal"))
    assert requests.get(f"{wrong.url}/echo", timeout=10).status_code == 502
    log = wait_for_log(wrong, "upstream_unreachable")
    assert "billing.internal" in log and "upstream_server_name" in log


def test_an_app_demanding_a_client_certificate_is_reached_with_one(
    start_proxy: ProxyFactory, mtls_app: str, ca: TestCA, client_cert: tuple[Path, Path]
) -> None:
    cert, key = client_cert
    proxy = start_proxy(config(mtls_app, ca_file=ca.cert, client_cert=cert, client_key=key))
    for _ in range(3):
        assert requests.get(f"{proxy.url}/echo", timeout=10).json()["method"] == "GET"
    with requests.get(f"{proxy.url}/sse?count=2&delay=2", stream=True, timeout=10) as events:
        started = time.monotonic()
        assert next(events.iter_content(chunk_size=None)).startswith(b"data: event 0")
        assert time.monotonic() - started < 1.5


def test_an_app_demanding_a_client_certificate_without_one_gets_502(
    start_proxy: ProxyFactory, mtls_app: str, ca: TestCA
) -> None:
    proxy = start_proxy(config(mtls_app, ca_file=ca.cert))
    answer = requests.get(f"{proxy.url}/echo", timeout=10)
    assert answer.status_code == 502
    log = wait_for_log(proxy, "upstream_unreachable")
    (line,) = [line for line in log.splitlines() if "upstream_unreachable: GET /echo" in line]
    assert "certificate required" in line
    assert "the app refused the client certificate ([proxy] upstream_client_cert)" in line


def test_a_client_certificate_from_another_ca_gets_502(
    start_proxy: ProxyFactory, mtls_app: str, ca: TestCA, tmp_path: Path
) -> None:
    cert, key = TestCA(tmp_path, "Rogue CA").issue("rogue", "ory-wsgi proxy", client=True)
    proxy = start_proxy(config(mtls_app, ca_file=ca.cert, client_cert=cert, client_key=key))
    assert requests.get(f"{proxy.url}/echo", timeout=10).status_code == 502
    log = wait_for_log(proxy, "upstream_unreachable")
    assert "unknown ca" in log and "[proxy] upstream_client_cert" in log


def tls_echo(ca: TestCA) -> EchoApp:
    """A websocket echo app serving TLS with a certificate for 127.0.0.1 signed by `ca`."""
    cert, key = ca.issue("ws-app", "127.0.0.1")
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    return EchoApp(tls=server_tls)


def test_websockets_reach_a_tls_app_signed_by_a_private_ca(
    start_proxy: ProxyFactory, ca: TestCA
) -> None:
    echo = tls_echo(ca)
    try:
        proxy = start_proxy(config(echo.url, ca_file=ca.cert))
        big = bytes(range(256)) * 1000  # several TLS records each way
        with connect(proxy.url.replace("http://", "ws://") + "/chat", open_timeout=10) as ws:
            for message in ("hello", big, "bye?"):
                ws.send(message)
                assert ws.recv(timeout=5) == message
        assert len(echo.seen("/chat")) == 1
    finally:
        echo.stop()


def test_a_websocket_to_an_untrusted_tls_app_gets_502(
    start_proxy: ProxyFactory, ca: TestCA
) -> None:
    echo = tls_echo(ca)
    try:
        proxy = start_proxy(config(echo.url))  # system CAs only
        answer = requests.get(
            f"{proxy.url}/chat",
            headers={
                "Connection": "Upgrade",
                "Upgrade": "websocket",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                "Sec-WebSocket-Version": "13",
            },
            timeout=10,
        )
        assert answer.status_code == 502
        assert "certificate verify failed" in wait_for_log(proxy, "upstream_unreachable")
        assert echo.seen("/chat") == []
    finally:
        echo.stop()


# Startup: every bad TLS setting stops the proxy with one line naming the setting.


def mismatched_pair(ca: TestCA) -> dict[str, Path]:
    cert, _ = ca.issue("one", "ory-wsgi proxy", client=True)
    _, other_key = ca.issue("two", "ory-wsgi proxy", client=True)
    return {"client_cert": cert, "client_key": other_key}


def bad_settings(ca: TestCA, directory: Path) -> list[tuple[dict[str, Path | str], str, str]]:
    """(upstream_* settings, the setting the error must name, what it must say)."""
    not_pem = directory / "not.pem"
    not_pem.write_text("hello\n")
    cert, key = ca.issue("good", "ory-wsgi proxy", client=True)
    return [
        (mismatched_pair(ca), "upstream_client_key", "does not belong to the certificate"),
        ({"ca_file": directory / "missing.pem"}, "upstream_ca_file", "no such file"),
        ({"ca_file": not_pem}, "upstream_ca_file", "not a PEM file"),
        ({"client_cert": not_pem, "client_key": key}, "upstream_client_cert", "not a PEM"),
        (
            {"client_cert": cert, "client_key": directory / "nokey"},
            "upstream_client_key",
            "no such",
        ),
        ({"client_key": key}, "upstream_client_key", "set client_cert too"),
    ]


def test_bad_tls_files_stop_make_app_with_one_line_naming_the_setting(
    ca: TestCA, tmp_path: Path
) -> None:
    for tls, setting, says in bad_settings(ca, tmp_path):
        overrides = {f"upstream_{key}": str(value) for key, value in tls.items()}
        with pytest.raises(ConfigError) as refused:
            make_app(upstream="https://127.0.0.1:8443", **overrides)
        message = str(refused.value)
        assert "\n" not in message
        assert f"[proxy] {setting}" in message, message
        assert says in message, message


@pytest.mark.parametrize("upstream", ["http://127.0.0.1:3000", "unix:/run/app.sock"])
def test_tls_settings_on_an_upstream_without_tls_are_refused(upstream: str, ca: TestCA) -> None:
    with pytest.raises(ConfigError, match=r"\[proxy\] upstream_ca_file: only an https upstream"):
        make_app(upstream=upstream, upstream_ca_file=str(ca.cert))


def test_a_key_that_does_not_match_its_certificate_stops_the_cli_with_one_line(
    ca: TestCA, tmp_path: Path
) -> None:
    pair = mismatched_pair(ca)
    path = tmp_path / "ory.toml"
    path.write_text(config("https://127.0.0.1:8443", **pair))
    result = subprocess.run(
        [sys.executable, "-m", "ory_wsgi.cli", "check-config", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert f"{path}: [proxy] upstream_client_key" in line
    assert "does not belong to the certificate" in line
