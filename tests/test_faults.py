"""Faults under a real gunicorn proxy, each answered as SPEC §15 says while other requests go on.

Every fault runs with good requests in flight from background threads
(`SteadyTraffic`); each of their answers is checked, and none may be lost or
wrong. Raw sockets carry the malformed requests, so that they reach gunicorn
exactly as written.
"""

from __future__ import annotations

import http.client
import itertools
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from ory_flows import PASSWORD, Start
from recording import RecordingUpstream
from servers import Gunicorn, ThreadedServer, free_port, log_records, worker_pids

from ory_wsgi.testing import FakeKratos
from ory_wsgi.testing.server import FakeKratosServer

ProxyFactory = Callable[..., Gunicorn]
MIB = 1024 * 1024
HEALTH = "/.ory/proxy/health/alive"
JSON = {"Accept": "application/json"}
RULES = """
[[protect]]
prefix = "/members"
"""
# [ory] timeout for the proxies here: short, so that "about the timeout" is quick to see.
ORY_TIMEOUT = 1.0


# -- requests in flight -------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One good request of the steady traffic and what its answer must show."""

    path: str
    headers: dict[str, str]
    echoed: bool = True
    """The test upstream answers it (echo): the answer must be for this very request."""
    bearer: bool = False
    """The upstream must get `Authorization: Bearer <jwt>` (a logged-in user)."""


class SteadyTraffic:
    """Good requests, one after another from background threads, while a fault happens.

    Every answer is checked as it arrives; `failures` lists each wrong or lost one.
    """

    def __init__(self, base_url: str, calls: Iterable[Call], threads: int = 2) -> None:
        self.base_url = base_url
        self.calls = list(calls)
        self.numbers = itertools.count()
        self.lock = threading.Lock()
        self.completed = 0
        self.failures: list[str] = []
        self.running = True
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> SteadyTraffic:
        for thread in self.threads:
            thread.start()
        self.settle(2)
        return self

    def __exit__(self, *exc: object) -> None:
        self.running = False
        for thread in self.threads:
            thread.join(15)

    def settle(self, count: int, timeout: float = 40.0) -> None:
        """Wait until `count` more requests have completed, from now."""
        target = self.completed + count
        deadline = time.monotonic() + timeout
        while self.completed < target and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.completed >= target, f"traffic stalled: {self.failures[:3]}"

    def _run(self) -> None:
        with requests.Session() as session:
            while self.running:
                number = next(self.numbers)
                call = self.calls[number % len(self.calls)]
                target = f"{call.path}?n={number}"
                try:
                    answer = session.get(self.base_url + target, headers=call.headers, timeout=30)
                    problem = self._problem(call, target, answer)
                except requests.RequestException as exc:
                    problem = f"{target}: {exc}"
                with self.lock:
                    self.completed += 1
                    if problem:
                        self.failures.append(problem)

    @staticmethod
    def _problem(call: Call, target: str, answer: requests.Response) -> str:
        if answer.status_code != 200:
            return f"{target}: {answer.status_code}"
        if not call.echoed:
            return ""
        seen = answer.json()
        if seen.get("raw_uri") != target:
            return f"{target}: got the answer for {seen.get('raw_uri')}"
        has_bearer = seen["headers"].get("Authorization", "").startswith("Bearer ")
        if has_bearer is not call.bearer:
            return f"{target}: Authorization {'missing' if call.bearer else 'leaked'}"
        return ""


ANONYMOUS = Call("/steady", {})


def member_traffic(proxy: Gunicorn, fake_ory: FakeKratos) -> list[Call]:
    """Anonymous visitors and a logged-in member whose session the proxy has already cached."""
    identity = fake_ory.add_identity(f"{uuid.uuid4().hex}@example.com", PASSWORD)
    token = fake_ory.create_session(identity["id"])[1]
    member = Call("/members/steady", {**JSON, "X-Session-Token": token}, bearer=True)
    warm = requests.get(f"{proxy.url}/members/warm", headers=member.headers, timeout=10)
    assert warm.json()["headers"]["Authorization"].startswith("Bearer ")
    return [ANONYMOUS, member]


# -- helpers ------------------------------------------------------------------------------


def access_record(server: Gunicorn, request_id: str, timeout: float = 8.0) -> dict[str, Any]:
    """The access-log line of one request (written when its body is done)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [
            record
            for record in log_records(server.log())
            if record.get("logger") == "ory_wsgi.access" and record.get("request_id") == request_id
        ]
        if lines or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(lines) == 1, server.log()[-3000:]
    return lines[0]


def reached_upstream(answer: requests.Response) -> bool:
    try:
        return "raw_uri" in answer.json()
    except ValueError:
        return False


def unknown_token() -> str:
    """A session token Ory never issued: each one is a fresh, uncached lookup."""
    return "ory_st_" + uuid.uuid4().hex


def kill(server: Gunicorn) -> None:
    """SIGKILL a gunicorn master and its workers: a crash, nothing said to anyone."""
    workers = worker_pids(server.process.pid)
    server.process.send_signal(signal.SIGKILL)
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    server.process.wait(10)


def download_while_killing(proxy: Gunicorn, upstream: Gunicorn, size: int) -> int:
    """Start a download of `size` bytes, kill the upstream after 1 MiB; the bytes received."""
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    conn.request("GET", f"/big?size={size}")
    response = conn.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Length") == str(size)
    received = 0
    while received < MIB:
        received += len(response.read(64 * 1024))
    kill(upstream)
    try:
        while chunk := response.read(MIB):
            received += len(chunk)
    except (http.client.IncompleteRead, ConnectionError):
        pass
    finally:
        conn.close()
    return received


# -- the upstream dies --------------------------------------------------------------------


@pytest.fixture
def doomed_upstream() -> Iterator[Gunicorn]:
    """The test application under its own gunicorn, for a test to kill."""
    server = Gunicorn("upstream_app:app", threads=4)
    yield server
    server.stop()


def test_upstream_killed_mid_download_cuts_the_client_stream(
    start_proxy: ProxyFactory, doomed_upstream: Gunicorn
) -> None:
    proxy = start_proxy(f'[proxy]\nupstream = "{doomed_upstream.url}"\n')
    size = 128 * MIB
    with SteadyTraffic(proxy.url, [Call(HEALTH, {}, echoed=False)]) as traffic:
        received = download_while_killing(proxy, doomed_upstream, size)
        traffic.settle(5)
    assert MIB <= received < size
    assert traffic.failures == []
    assert "Traceback" not in proxy.log()


def test_proxy_serves_again_once_the_killed_upstream_restarts_on_its_port(
    start_proxy: ProxyFactory, doomed_upstream: Gunicorn
) -> None:
    proxy = start_proxy(f'[proxy]\nupstream = "{doomed_upstream.url}"\n')
    with requests.Session() as client:
        for number in range(8):  # fills the proxy's pool with connections about to die
            assert client.get(f"{proxy.url}/warm?n={number}", timeout=10).status_code == 200
        download_while_killing(proxy, doomed_upstream, 128 * MIB)
        assert client.get(f"{proxy.url}/down", timeout=10).status_code == 502
        restarted = Gunicorn("upstream_app:app", threads=4, port=doomed_upstream.port)
        try:
            gets = [client.get(f"{proxy.url}/again?n={n}", timeout=10) for n in range(20)]
            post = client.post(f"{proxy.url}/again", data=b"x" * 100_000, timeout=10)
        finally:
            restarted.stop()
    assert [answer.json()["raw_uri"] for answer in gets] == [f"/again?n={n}" for n in range(20)]
    assert (post.status_code, post.json()["size"]) == (200, 100_000)


# -- Ory misbehaves -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def ory_proxy(
    fake_ory_server: FakeKratosServer,
    upstream: ThreadedServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gunicorn]:
    """One proxy with /members protected, in front of the Kratos stand-in, for Ory's faults."""
    directory = tmp_path_factory.mktemp("faults")
    port = free_port()
    config = directory / "ory.toml"
    config.write_text(
        f'[proxy]\nupstream = "{upstream.url}"\npublic_url = "http://127.0.0.1:{port}"\n'
        f'[ory]\nsdk_url = "{fake_ory_server.url}"\ntimeout = {ORY_TIMEOUT}\n{RULES}'
    )
    server = Gunicorn(f'ory_wsgi:make_app("{config}")', threads=8, cwd=directory, port=port)
    yield server
    server.stop()


ORY_FAULTS: dict[str, Callable[[FakeKratos], None]] = {
    "garbage_json": lambda ory: ory.garble_whoami(),
    "connection_closed": lambda ory: ory.drop_whoami(),
    "503": lambda ory: ory.fail_whoami(503),
    "502": lambda ory: ory.fail_whoami(502),
}


@pytest.mark.parametrize("fault", ORY_FAULTS)
def test_ory_fault_on_a_protected_path_is_503_with_retry_after(
    ory_proxy: Gunicorn, fake_ory: FakeKratos, fault: str
) -> None:
    with SteadyTraffic(ory_proxy.url, member_traffic(ory_proxy, fake_ory)) as traffic:
        ORY_FAULTS[fault](fake_ory)
        request_id = uuid.uuid4().hex
        answer = requests.get(
            f"{ory_proxy.url}/members/x",
            headers={**JSON, "X-Session-Token": unknown_token(), "X-Request-Id": request_id},
            timeout=10,
        )
        traffic.settle(3)
    assert answer.status_code == 503
    assert int(answer.headers["Retry-After"]) > 0
    assert answer.json()["error"]["code"] == 503
    assert access_record(ory_proxy, request_id)["error"] == "ory_unavailable"
    assert traffic.failures == []


@pytest.mark.parametrize("fault", ORY_FAULTS)
def test_ory_fault_on_an_open_path_is_served_anonymously(
    ory_proxy: Gunicorn, fake_ory: FakeKratos, fault: str
) -> None:
    with SteadyTraffic(ory_proxy.url, member_traffic(ory_proxy, fake_ory)) as traffic:
        ORY_FAULTS[fault](fake_ory)
        request_id = uuid.uuid4().hex
        answer = requests.get(
            f"{ory_proxy.url}/open",
            headers={"X-Session-Token": unknown_token(), "X-Request-Id": request_id},
            timeout=10,
        )
        traffic.settle(3)
    assert answer.status_code == 200
    assert "Authorization" not in answer.json()["headers"]
    assert access_record(ory_proxy, request_id)["error"] == "ory_unavailable"
    assert traffic.failures == []


def test_ory_faults_leave_no_traceback_in_the_log(
    ory_proxy: Gunicorn, fake_ory: FakeKratos
) -> None:
    for fault in ORY_FAULTS.values():
        fault(fake_ory)
        for path in ("/members/x", "/open"):
            requests.get(
                f"{ory_proxy.url}{path}", headers={"X-Session-Token": unknown_token()}, timeout=10
            )
        fake_ory.heal()
    log = ory_proxy.log()
    assert "Traceback" not in log
    assert not [r for r in log_records(log) if r.get("status") == 500]


def timed_get(url: str, headers: dict[str, str]) -> tuple[requests.Response, float]:
    started = time.monotonic()
    answer = requests.get(url, headers=headers, timeout=15)
    return answer, time.monotonic() - started


def test_ory_slower_than_its_timeout_on_a_protected_path_is_503_within_about_the_timeout(
    start_ory_proxy: Start, fake_ory: FakeKratos
) -> None:
    proxy = start_ory_proxy(f"timeout = {ORY_TIMEOUT}\n{RULES}")
    with SteadyTraffic(proxy.url, member_traffic(proxy, fake_ory)) as traffic:
        fake_ory.whoami_delay = 5.0
        before = traffic.completed
        answer, took = timed_get(
            f"{proxy.url}/members/x", {**JSON, "X-Session-Token": unknown_token()}
        )
        during = traffic.completed - before
    assert answer.status_code == 503
    assert int(answer.headers["Retry-After"]) > 0
    assert took < ORY_TIMEOUT + 1.5, f"answered after {took:.2f}s"
    assert during >= 3, "nothing else was served while Ory was slow"
    assert traffic.failures == []


def test_ory_slower_than_its_timeout_on_an_open_path_is_served_anonymously_within_the_timeout(
    start_ory_proxy: Start, fake_ory: FakeKratos
) -> None:
    proxy = start_ory_proxy(f"timeout = {ORY_TIMEOUT}\n{RULES}")
    with SteadyTraffic(proxy.url, member_traffic(proxy, fake_ory)) as traffic:
        fake_ory.whoami_delay = 5.0
        before = traffic.completed
        answer, took = timed_get(f"{proxy.url}/open", {"X-Session-Token": unknown_token()})
        during = traffic.completed - before
    assert answer.status_code == 200
    assert "Authorization" not in answer.json()["headers"]
    assert took < ORY_TIMEOUT + 1.5, f"answered after {took:.2f}s"
    assert during >= 3, "nothing else was served while Ory was slow"
    assert traffic.failures == []


def test_ory_rate_limit_on_an_open_path_is_served_anonymously(
    start_ory_proxy: Start, fake_ory: FakeKratos
) -> None:
    proxy = start_ory_proxy(RULES)
    fake_ory.fail_whoami(429, retry_after="7")
    answer = requests.get(
        f"{proxy.url}/open", headers={"X-Session-Token": unknown_token()}, timeout=10
    )
    assert answer.status_code == 200
    assert "Authorization" not in answer.json()["headers"]


def test_ory_rate_limit_without_retry_after_still_tells_the_client_when(
    start_ory_proxy: Start, fake_ory: FakeKratos
) -> None:
    proxy = start_ory_proxy(RULES)
    with SteadyTraffic(proxy.url, member_traffic(proxy, fake_ory)) as traffic:
        fake_ory.fail_whoami(429)
        answer = requests.get(
            f"{proxy.url}/members/x",
            headers={**JSON, "X-Session-Token": unknown_token()},
            timeout=10,
        )
        traffic.settle(3)
    assert answer.status_code == 429
    assert int(answer.headers["Retry-After"]) > 0
    assert traffic.failures == []


@pytest.fixture(scope="module")
def orphan_proxy(
    upstream: ThreadedServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gunicorn]:
    """A proxy whose Ory is not there at all: nothing listens on its port."""
    directory = tmp_path_factory.mktemp("no-ory")
    config = directory / "ory.toml"
    config.write_text(
        f'[proxy]\nupstream = "{upstream.url}"\n'
        f'[ory]\nsdk_url = "http://127.0.0.1:{free_port()}"\n{RULES}'
    )
    server = Gunicorn(f'ory_wsgi:make_app("{config}")', threads=8, cwd=directory)
    yield server
    server.stop()


def test_ory_down_entirely_on_a_protected_path_is_503_with_retry_after(
    orphan_proxy: Gunicorn,
) -> None:
    with SteadyTraffic(orphan_proxy.url, [ANONYMOUS]) as traffic:
        request_id = uuid.uuid4().hex
        answer, took = timed_get(
            f"{orphan_proxy.url}/members/x",
            {**JSON, "X-Session-Token": unknown_token(), "X-Request-Id": request_id},
        )
        traffic.settle(3)
    assert answer.status_code == 503
    assert int(answer.headers["Retry-After"]) > 0
    assert took < ORY_TIMEOUT + 1.5
    assert access_record(orphan_proxy, request_id)["error"] == "ory_unavailable"
    assert traffic.failures == []


def test_ory_down_entirely_on_an_open_path_is_served_anonymously(orphan_proxy: Gunicorn) -> None:
    with SteadyTraffic(orphan_proxy.url, [ANONYMOUS]) as traffic:
        request_id = uuid.uuid4().hex
        answer = requests.get(
            f"{orphan_proxy.url}/open",
            headers={"X-Session-Token": unknown_token(), "X-Request-Id": request_id},
            timeout=10,
        )
        traffic.settle(3)
    assert answer.status_code == 200
    assert "Authorization" not in answer.json()["headers"]
    assert access_record(orphan_proxy, request_id)["error"] == "ory_unavailable"
    assert traffic.failures == []


# -- a client that sends its headers and then nothing --------------------------------------


def stalled_upload(proxy: Gunicorn) -> socket.socket:
    """A POST that promises a body and never sends it."""
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=15)
    sock.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n")
    return sock


def status_of(sock: socket.socket) -> int:
    response = http.client.HTTPResponse(sock)
    response.begin()
    response.read()
    return response.status


def test_client_that_never_sends_its_body_is_408_after_the_read_timeout_and_frees_the_thread(
    start_proxy: ProxyFactory, upstream: ThreadedServer
) -> None:
    threads = 2
    proxy = start_proxy(
        f'[proxy]\nupstream = "{upstream.url}"\nread_timeout = "1s"\n', threads=threads
    )
    stalled = [stalled_upload(proxy) for _ in range(threads)]  # every worker thread taken
    try:
        with SteadyTraffic(proxy.url, [ANONYMOUS]) as traffic:
            statuses = [status_of(sock) for sock in stalled]
            traffic.settle(5)
    finally:
        for sock in stalled:
            sock.close()
    assert statuses == [408] * threads
    assert traffic.failures == []
    assert "Traceback" not in proxy.log()


# -- a client that trickles its body: a deadline for the whole body ----------------------

TRICKLE_CONFIG = 'read_timeout = "5s"\nbody_timeout = "2s"\nbody_min_rate = 200\n'


def trickle(port: int, head: bytes, pieces: Iterable[bytes], pause: float) -> tuple[int, float]:
    """Send `head`, then each piece `pause` seconds apart until answered: (status, seconds)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(head)
        sock.settimeout(pause)
        answer = b""
        for piece in pieces:
            try:
                answer = sock.recv(65536)
            except TimeoutError:
                pass
            if answer:
                break
            try:
                sock.sendall(piece)
            except OSError:
                break
        sock.settimeout(20)
        while b"\r\n" not in answer:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    assert answer.startswith(b"HTTP/1."), answer
    return int(answer[9:12]), time.monotonic() - started


TRICKLES = {
    "sized_one_byte_a_second": (
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n",
        [b"x"] * 100,
    ),
    "chunked_one_chunk_a_second": (
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        [b"1\r\nx\r\n"] * 100,
    ),
    "fast_start_then_trickle": (
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n" + b"x" * 400,
        [b"x"] * 600,
    ),
}


@pytest.mark.parametrize("case", TRICKLES)
def test_body_trickled_slower_than_the_minimum_rate_is_408_at_its_deadline(
    start_proxy: ProxyFactory, upstream: ThreadedServer, case: str
) -> None:
    proxy = start_proxy(f'[proxy]\nupstream = "{upstream.url}"\n{TRICKLE_CONFIG}')
    head, pieces = TRICKLES[case]
    status, seconds = trickle(proxy.port, head, pieces, pause=0.5)
    assert status == 408
    # 2 s, +2 s for the fast 400 bytes at 200 B/s, +1 s per 200 trickled, +0.5 s checks.
    assert seconds < 8
    time.sleep(0.2)
    log = proxy.log()
    assert log.count("body_timeout:") == 1, log
    assert "Traceback" not in log


def test_body_trickled_under_the_dev_server_is_408_at_its_deadline(
    dev_proxy: Callable[..., ThreadedServer], upstream: ThreadedServer
) -> None:
    server = dev_proxy(upstream=upstream.url, read_timeout=5, body_timeout=2, body_min_rate=200)
    head, pieces = TRICKLES["sized_one_byte_a_second"]
    status, seconds = trickle(server.port, head, pieces, pause=0.5)
    assert (status, seconds < 8) == (408, True)


def test_slow_upload_above_the_minimum_rate_is_forwarded_whole(
    start_proxy: ProxyFactory, upstream: ThreadedServer
) -> None:
    proxy = start_proxy(f'[proxy]\nupstream = "{upstream.url}"\n{TRICKLE_CONFIG}')
    # 2000 bytes in 4 s: past body_timeout, but at 500 B/s, above body_min_rate (200 B/s).
    head = b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 2000\r\n\r\n"
    status, seconds = trickle(proxy.port, head, [b"x" * 50] * 40, pause=0.1)
    assert status == 200
    assert seconds > 3.5


def test_slow_answer_to_a_complete_body_is_not_cut_by_the_body_deadline(
    start_proxy: ProxyFactory, upstream: ThreadedServer
) -> None:
    proxy = start_proxy(
        f'[proxy]\nupstream = "{upstream.url}"\nbody_timeout = "1s"\nbody_min_rate = 0\n'
    )
    # The body is in at once; the app then takes longer than the body's deadline to answer,
    # and the client's connection must still serve its next request.
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(b"POST /slow?delay=2.5 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")
        first = http.client.HTTPResponse(sock)
        first.begin()
        first.read()
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n")
        second = http.client.HTTPResponse(sock)
        second.begin()
        second.read()
    assert (first.status, second.status) == (200, 200)
    assert "body_timeout" not in proxy.log()


def test_big_upload_at_full_speed_is_not_cut_by_the_body_deadline(
    start_proxy: ProxyFactory, upstream: ThreadedServer
) -> None:
    proxy = start_proxy(
        f'[proxy]\nupstream = "{upstream.url}"\nbody_timeout = "1s"\nbody_min_rate = 500\n'
    )
    response = requests.post(f"{proxy.url}/echo", data=b"x" * (64 * MIB), timeout=60)
    assert response.status_code == 200


# -- malformed requests through gunicorn --------------------------------------------------


@pytest.fixture(scope="module")
def recorder() -> RecordingUpstream:
    return RecordingUpstream()


@pytest.fixture(scope="module")
def recorded_proxy(
    recorder: RecordingUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gunicorn]:
    """A proxy in front of an upstream that records every request it gets."""
    upstream = ThreadedServer(recorder)
    directory = tmp_path_factory.mktemp("recorded")
    config = directory / "ory.toml"
    config.write_text(f'[proxy]\nupstream = "{upstream.url}"\n')
    server = Gunicorn(f'ory_wsgi:make_app("{config}")', threads=4, cwd=directory)
    yield server
    server.stop()
    upstream.stop()


def exchange(proxy: Gunicorn, data: bytes) -> tuple[int, bytes]:
    """Send bytes as they are; the status and body of the answer, then wait for the close."""
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        sock.sendall(data)
        response = http.client.HTTPResponse(sock)
        response.begin()
        body = response.read()
        try:
            while sock.recv(65536):
                pass
        except (TimeoutError, ConnectionError):
            pass
    return response.status, body


CLOSE = b"Connection: close\r\n"
MALFORMED: dict[str, tuple[bytes, int]] = {
    "header_line_too_long": (
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
        431,
    ),
    "too_many_headers": (
        b"GET / HTTP/1.1\r\nHost: a\r\n"
        + b"".join(b"X-%d: 1\r\n" % i for i in range(120))
        + b"\r\n",
        431,
    ),
    "request_line_too_long": (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414),
    "no_request_line": (b"GARBAGE\r\n\r\n", 400),
    "unknown_http_version": (b"GET / HTTP/9.9\r\nHost: a\r\n\r\n", 400),
    "lowercase_method": (b"get / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    "header_without_colon": (b"GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", 400),
    "space_in_header_name": (b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n", 400),
    "nul_in_header_value": (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", 400),
    "control_character_in_target": (b"GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    "non_ascii_in_target": (b"GET /a\xffb HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    "bare_lf_line_ends": (b"GET / HTTP/1.1\nHost: a\n\n", 400),
    "content_length_not_a_number": (
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n",
        400,
    ),
    "negative_content_length": (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400),
    "unknown_transfer_coding": (
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n",
        501,
    ),
    "two_hosts": (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    "host_with_a_space": (b"GET / HTTP/1.1\r\nHost: a b\r\n" + CLOSE + b"\r\n", 400),
    "absolute_form_with_broken_authority": (
        b"GET http://[/x HTTP/1.1\r\nHost: a\r\n" + CLOSE + b"\r\n",
        400,
    ),
    "authority_form_target": (b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n" + CLOSE + b"\r\n", 400),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_request_is_refused_with_its_4xx_and_never_reaches_the_app(
    recorded_proxy: Gunicorn, recorder: RecordingUpstream, case: str
) -> None:
    data, expected = MALFORMED[case]
    count = len(recorder.since(0))
    status, _ = exchange(recorded_proxy, data)
    assert status == expected
    assert recorder.since(count) == []


def test_malformed_requests_leave_no_traceback_and_no_500_in_the_log(
    recorded_proxy: Gunicorn,
) -> None:
    for data, _ in MALFORMED.values():
        exchange(recorded_proxy, data)
    log = recorded_proxy.log()
    assert "Traceback" not in log
    assert not [r for r in log_records(log) if r.get("status") == 500]
    assert " 500 " not in log


def test_malformed_chunk_mid_body_is_400_and_the_upstream_never_gets_a_whole_request(
    recorded_proxy: Gunicorn, recorder: RecordingUpstream
) -> None:
    count = len(recorder.since(0))
    status, _ = exchange(
        recorded_proxy,
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\nzz\r\nworld\r\n0\r\n\r\n",
    )
    assert status == 400
    # The body streams: the upstream got the head, then a connection closed mid-body.
    time.sleep(0.3)
    assert [seen.answered for seen in recorder.since(count)] in ([], [False])


SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
POST = b"POST /echo HTTP/1.1\r\nHost: a\r\n"
SMUGGLING: dict[str, bytes] = {
    "content_length_and_chunked": POST
    + b"Content-Length: 42\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    + SMUGGLED,
    "chunked_and_content_length": POST
    + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"
    + SMUGGLED,
    "duplicate_content_length": POST
    + b"Content-Length: 0\r\nContent-Length: 42\r\n\r\n"
    + SMUGGLED,
    "content_length_list": POST + b"Content-Length: 0, 42\r\n\r\n" + SMUGGLED,
    "content_length_with_plus": POST + b"Content-Length: +0\r\n\r\n" + SMUGGLED,
    "obs_fold_hiding_transfer_encoding": POST
    + b"X-Pad: 1\r\n Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"
    + SMUGGLED,
    "space_before_colon": POST
    + b"Transfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"
    + SMUGGLED,
    "chunked_twice": POST + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "chunked_on_http_1_0": b"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    + SMUGGLED,
    "gzip_then_chunked": POST + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
}


@pytest.mark.parametrize("case", SMUGGLING)
def test_smuggling_attempt_never_yields_a_second_request_at_the_upstream(
    recorded_proxy: Gunicorn, recorder: RecordingUpstream, case: str
) -> None:
    count = len(recorder.since(0))
    status, _ = exchange(recorded_proxy, SMUGGLING[case])
    seen = recorder.since(count)
    assert status != 500
    assert len(seen) <= 1, seen
    assert not [request for request in seen if "smuggled" in request.raw_uri]
