"""Graceful shutdown under gunicorn with the shipped config: nothing in flight is cut."""

from __future__ import annotations

import concurrent.futures
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import requests
from servers import ROOT, Gunicorn, ThreadedServer

from ory_wsgi.readiness import READY_PATH

SHIPPED_CONFIG = ("-c", "python:ory_wsgi.gunicorn_conf")


def start(
    start_proxy: Callable[..., Gunicorn], upstream: ThreadedServer, **kwargs: object
) -> Gunicorn:
    return start_proxy(
        f'[proxy]\nupstream = "{upstream.url}"\n', *SHIPPED_CONFIG, threads=8, **kwargs
    )


def slow_request(proxy: Gunicorn) -> requests.Response:
    return requests.get(f"{proxy.url}/slow?delay=1.5", timeout=10)


def test_sigterm_lets_streams_and_requests_in_flight_finish(
    start_proxy: Callable[..., Gunicorn], upstream: ThreadedServer
) -> None:
    proxy = start(start_proxy, upstream)
    stream = requests.get(f"{proxy.url}/sse?count=6&delay=0.3", stream=True, timeout=10)
    lines = stream.iter_lines()
    events = [next(line for line in lines if line)]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        slow = [pool.submit(slow_request, proxy) for _ in range(4)]
        time.sleep(0.5)  # the slow requests are now waiting on the upstream
        proxy.process.send_signal(signal.SIGTERM)
        events += [line for line in lines if line]
        answers = [future.result() for future in slow]
    assert len(events) == 6 and events[-1].startswith(b"data: event 5 ")
    assert [(answer.status_code, answer.json()) for answer in answers] == [
        (200, {"slow": True})
    ] * 4
    assert proxy.process.wait(10) == 0


def test_readiness_is_503_from_the_moment_sigterm_arrives_while_requests_are_still_served(
    start_proxy: Callable[..., Gunicorn], upstream: ThreadedServer
) -> None:
    proxy = start(start_proxy, upstream, env={"ORY_DRAIN_SECONDS": "3"})
    assert requests.get(proxy.url + READY_PATH, timeout=5).status_code == 200
    proxy.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 2
    answer = requests.get(proxy.url + READY_PATH, timeout=5)
    while answer.status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.05)
        answer = requests.get(proxy.url + READY_PATH, timeout=5)
    assert (answer.status_code, answer.json()["reason"]) == (503, "shutting_down")
    assert requests.get(f"{proxy.url}/page", timeout=5).status_code == 200
    assert proxy.process.wait(8) == 0


def test_shipped_config_uses_threaded_workers_and_reuse_port() -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "gunicorn", *SHIPPED_CONFIG, "--print-config", "ory_wsgi:make_app"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
        check=True,
    ).stdout
    settings = {
        name.strip(): value.strip()
        for name, _, value in (line.partition("=") for line in printed.splitlines())
    }
    assert settings["worker_class"] == "gthread"
    assert settings["reuse_port"] == "True"
    assert int(settings["threads"]) >= 8
    assert float(settings["graceful_timeout"]) >= 30
