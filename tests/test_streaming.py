"""Streaming through the proxy under gunicorn: prompt events, flat memory for big bodies."""

from __future__ import annotations

import hashlib
import http.client
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from servers import Gunicorn, rss_bytes, worker_pids

MIB = 1024 * 1024
BIG = 256 * MIB
# Buffering a whole 256 MiB body would show as at least that much; a
# streaming worker stays within a few chunks plus interpreter noise.
RSS_BUDGET = 48 * MIB


class PeakRss:
    """Samples the resident memory of a gunicorn master's workers while a transfer runs."""

    def __init__(self, server: Gunicorn) -> None:
        self.pids = worker_pids(server.process.pid)
        assert self.pids, "gunicorn has no workers"
        self.baseline = {pid: rss_bytes(pid) for pid in self.pids}
        self.peak = dict(self.baseline)
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while self.running:
            for pid in self.pids:
                self.peak[pid] = max(self.peak[pid], rss_bytes(pid))
            time.sleep(0.01)

    def __enter__(self) -> PeakRss:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.running = False
        self.thread.join()

    @property
    def growth(self) -> int:
        return max(self.peak[pid] - self.baseline[pid] for pid in self.pids)


def connection(url: str, timeout: float = 10.0) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    return http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)


class GeneratedBody:
    """`size` bytes made up on the fly, hashed as they are read; has a length."""

    def __init__(self, size: int) -> None:
        self.remaining = size
        self.block = hashlib.sha512(b"seed").digest() * 2048  # 128 KiB
        self.digest = hashlib.sha256()

    def __len__(self) -> int:
        return self.remaining

    def read(self, amount: int = -1) -> bytes:
        size = len(self.block) if amount < 0 else min(amount, len(self.block))
        data = self.block[: min(size, self.remaining)]
        self.remaining -= len(data)
        self.digest.update(data)
        return data

    def chunks(self) -> Iterator[bytes]:
        while data := self.read():
            yield data


def test_server_sent_event_reaches_client_before_upstream_sends_more(proxy: Gunicorn) -> None:
    conn = connection(proxy.url)
    started = time.monotonic()
    conn.request("GET", "/sse?count=3&delay=1")
    response = conn.getresponse()
    first = response.read1(65536)
    waited = time.monotonic() - started
    conn.close()
    assert first.startswith(b"data: event 0")
    assert waited < 0.7, f"the first event took {waited:.2f}s, the upstream sent it at once"


def test_events_arrive_one_by_one_as_upstream_sends_them(proxy: Gunicorn) -> None:
    conn = connection(proxy.url)
    conn.request("GET", "/sse?count=2&delay=0.8")
    response = conn.getresponse()
    first = response.read1(65536)
    first_at = time.monotonic()
    second = response.read1(65536)
    gap = time.monotonic() - first_at
    conn.close()
    assert b"event 0" in first and b"event 1" not in first
    assert b"event 1" in second
    assert 0.4 < gap < 2.0


def test_big_download_streams_with_flat_worker_memory(proxy: Gunicorn) -> None:
    received = 0
    with PeakRss(proxy) as rss:
        with requests.get(f"{proxy.url}/big?size={BIG}", stream=True, timeout=10) as response:
            assert response.headers["Content-Length"] == str(BIG)
            for chunk in response.raw.stream(MIB, decode_content=False):
                received += len(chunk)
    assert received == BIG
    assert rss.growth < RSS_BUDGET, f"a worker grew by {rss.growth / MIB:.0f} MiB"


def test_big_download_without_length_streams_to_its_end(proxy: Gunicorn) -> None:
    received = 0
    with requests.get(f"{proxy.url}/big?size={64 * MIB}&length=0", stream=True) as response:
        assert "Content-Length" not in response.headers
        for chunk in response.raw.stream(MIB, decode_content=False):
            received += len(chunk)
    assert received == 64 * MIB


def test_big_upload_with_content_length_streams_with_flat_worker_memory(
    proxy: Gunicorn,
) -> None:
    body = GeneratedBody(BIG)
    with PeakRss(proxy) as rss:
        response = requests.post(f"{proxy.url}/echo", data=body, timeout=30)
    seen: dict[str, Any] = response.json()
    assert seen["headers"]["Content-Length"] == str(BIG)
    assert "Transfer-Encoding" not in seen["headers"]
    assert (seen["size"], seen["sha256"]) == (BIG, body.digest.hexdigest())
    assert rss.growth < RSS_BUDGET, f"a worker grew by {rss.growth / MIB:.0f} MiB"


def test_big_chunked_upload_streams_with_flat_worker_memory(proxy: Gunicorn) -> None:
    body = GeneratedBody(BIG)
    with PeakRss(proxy) as rss:
        response = requests.post(f"{proxy.url}/echo", data=body.chunks(), timeout=30)
    seen: dict[str, Any] = response.json()
    assert seen["headers"]["Transfer-Encoding"] == "chunked"
    assert "Content-Length" not in seen["headers"]
    assert (seen["size"], seen["sha256"]) == (BIG, body.digest.hexdigest())
    assert rss.growth < RSS_BUDGET, f"a worker grew by {rss.growth / MIB:.0f} MiB"


@pytest.mark.parametrize("size", [0, 1, 65535, 65536, 65537])
def test_chunked_upload_of_edge_sizes_arrives_whole(proxy: Gunicorn, size: int) -> None:
    body = GeneratedBody(size)
    response = requests.post(f"{proxy.url}/echo", data=body.chunks(), timeout=10)
    seen = response.json()
    assert (seen["size"], seen["sha256"]) == (size, body.digest.hexdigest())
