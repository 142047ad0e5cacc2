"""Readiness: keys loaded and Ory answering recently, probed at most once per interval."""

from __future__ import annotations

import time
from collections.abc import Callable

import requests
from servers import Gunicorn, ThreadedServer, free_port
from upstream_app import app as upstream_wsgi

from ory_wsgi.ory.client import OryClient
from ory_wsgi.readiness import READY_PATH, Readiness
from ory_wsgi.testing import FakeKratos


def ory_config(upstream: ThreadedServer, sdk_url: str) -> str:
    return f'[proxy]\nupstream = "{upstream.url}"\n[ory]\nsdk_url = "{sdk_url}"\n'


def probes(fake_ory: FakeKratos) -> int:
    return sum(1 for logged in fake_ory.request_log if logged.path == "/health/alive")


def test_ready_when_keys_are_loaded_and_ory_answers(
    start_proxy: Callable[..., Gunicorn], upstream: ThreadedServer, fake_ory: FakeKratos
) -> None:
    proxy = start_proxy(ory_config(upstream, fake_ory.url))
    answer = requests.get(proxy.url + READY_PATH, timeout=5)
    assert (answer.status_code, answer.json()) == (200, {"status": "ok"})
    assert answer.headers["Cache-Control"] == "no-store"


def test_not_ready_with_the_reason_when_ory_does_not_answer(
    start_proxy: Callable[..., Gunicorn], upstream: ThreadedServer
) -> None:
    proxy = start_proxy(ory_config(upstream, f"http://127.0.0.1:{free_port()}"))
    answer = requests.get(proxy.url + READY_PATH, timeout=5)
    assert answer.status_code == 503
    assert answer.json()["reason"] == "ory_unavailable"


def test_ory_is_probed_at_most_once_per_interval(
    start_proxy: Callable[..., Gunicorn], upstream: ThreadedServer, fake_ory: FakeKratos
) -> None:
    proxy = start_proxy(ory_config(upstream, fake_ory.url))
    for _ in range(5):
        assert requests.get(proxy.url + READY_PATH, timeout=5).status_code == 200
    assert probes(fake_ory) == 1


def test_a_recent_session_lookup_makes_a_probe_unnecessary(
    start_proxy: Callable[..., Gunicorn], upstream: ThreadedServer, fake_ory: FakeKratos
) -> None:
    proxy = start_proxy(ory_config(upstream, fake_ory.url))
    requests.get(f"{proxy.url}/page", headers={"X-Session-Token": "ory_st_unknown"}, timeout=5)
    assert requests.get(proxy.url + READY_PATH, timeout=5).status_code == 200
    assert probes(fake_ory) == 0


def test_ready_without_ory_configured(
    start_proxy: Callable[..., Gunicorn], upstream: ThreadedServer
) -> None:
    proxy = start_proxy(f'[proxy]\nupstream = "{upstream.url}"\n')
    assert requests.get(proxy.url + READY_PATH, timeout=5).status_code == 200


def test_readiness_turns_503_once_ory_has_not_answered_for_an_interval() -> None:
    ory = ThreadedServer(upstream_wsgi)  # any HTTP server stands in for a live Ory here
    server = ThreadedServer(Readiness(client=OryClient(ory.url, timeout=1.0), interval=0.2))
    try:
        assert requests.get(server.url, timeout=5).status_code == 200
        ory.stop()
        time.sleep(0.5)
        answer = requests.get(server.url, timeout=5)
    finally:
        server.stop()
    assert (answer.status_code, answer.json()["reason"]) == (503, "ory_unavailable")
