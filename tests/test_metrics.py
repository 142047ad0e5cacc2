"""Prometheus metrics: counted by real proxies (werkzeug in-process, gunicorn multiprocess)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from ory_flows import PASSWORD
from prometheus_client.parser import text_string_to_metric_families
from servers import Gunicorn, ThreadedServer, free_port
from werkzeug.test import Client

from ory_wsgi.app import build_app
from ory_wsgi.errors import ConfigError
from ory_wsgi.metrics import METRICS_PATH, Metrics
from ory_wsgi.settings import load_settings
from ory_wsgi.testing import FakeKratos

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
Start = Callable[..., ThreadedServer]


@pytest.fixture
def metered_proxy(
    upstream: ThreadedServer, fake_ory: FakeKratos, tmp_path: Path
) -> Iterator[Start]:
    """start(**metrics_args): the proxy with metrics on werkzeug, `/members` protected."""
    started: list[ThreadedServer] = []

    def start(**metrics_args: Any) -> ThreadedServer:
        settings = load_settings(
            None,
            env={},
            overrides={
                "upstream": upstream.url,
                "state_dir": str(tmp_path),
                "ory": {"sdk_url": fake_ory.url},
                "protect": [{"prefix": "/members"}],
            },
        )
        server = ThreadedServer(build_app(settings, Metrics(**metrics_args)), poll_interval=0.05)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def scrape(url: str, answered: int | None = None) -> Samples:
    """The samples, once `answered` requests (scrapes aside) are counted.

    A request is counted when the server closes its body, which may come just
    after the client has read the response.
    """
    deadline = time.monotonic() + 5
    while True:
        answer = requests.get(f"{url}{METRICS_PATH}", timeout=5)
        assert answer.status_code == 200, answer.text
        samples = {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(answer.text)
            for sample in family.samples
        }
        counted = sum(
            count
            for (name, labels), count in samples.items()
            if name == "ory_wsgi_requests_total" and ("route", "proxy") not in labels
        )
        if answered is None or counted >= answered or time.monotonic() > deadline:
            return samples
        time.sleep(0.02)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def session_cookie(fake_ory: FakeKratos) -> dict[str, str]:
    identity = fake_ory.add_identity("ada@example.com", PASSWORD)
    _, token = fake_ory.create_session(identity["id"])
    return fake_ory.cookies(token)


def test_requests_are_counted_by_decision_and_status(
    metered_proxy: Start, fake_ory: FakeKratos
) -> None:
    proxy = metered_proxy()
    cookies = session_cookie(fake_ory)
    assert requests.get(f"{proxy.url}/members/a", timeout=5).status_code == 401
    assert requests.get(f"{proxy.url}/members/a", cookies=cookies, timeout=5).status_code == 200
    assert requests.get(f"{proxy.url}/open", timeout=5).status_code == 200
    samples = scrape(proxy.url, answered=3)
    name = "ory_wsgi_requests_total"
    route = "protect /members"
    assert value(samples, name, route=route, decision="login", status="401") == 1
    assert value(samples, name, route=route, decision="allow", status="200") == 1
    assert value(samples, name, route="app", decision="none", status="200") == 1


def test_paths_are_collapsed_to_the_rule_that_governs_them(metered_proxy: Start) -> None:
    proxy = metered_proxy()
    for path in ("/members/a", "/members/b/c", "/members"):
        requests.get(f"{proxy.url}{path}", timeout=5)
    samples = scrape(proxy.url, answered=3)
    routes = {
        dict(labels)["route"] for name, labels in samples if name == "ory_wsgi_requests_total"
    }
    assert routes - {"proxy"} == {"protect /members"}  # "proxy": the scrapes themselves
    assert (
        value(
            samples,
            "ory_wsgi_requests_total",
            route="protect /members",
            decision="login",
            status="401",
        )
        == 3
    )


def test_whoami_latency_is_observed_once_per_cache_miss(
    metered_proxy: Start, fake_ory: FakeKratos
) -> None:
    proxy = metered_proxy()
    cookies = session_cookie(fake_ory)
    for _ in range(3):
        requests.get(f"{proxy.url}/page", cookies=cookies, timeout=5)
    samples = scrape(proxy.url, answered=3)
    count = value(samples, "ory_wsgi_whoami_duration_seconds_count", outcome="authenticated")
    assert count == 1 == fake_ory.whoami_calls
    assert value(samples, "ory_wsgi_whoami_duration_seconds_sum", outcome="authenticated") > 0


def test_session_cache_hits_and_misses_are_counted(
    metered_proxy: Start, fake_ory: FakeKratos
) -> None:
    proxy = metered_proxy()
    cookies = session_cookie(fake_ory)
    for _ in range(3):
        requests.get(f"{proxy.url}/page", cookies=cookies, timeout=5)
    requests.get(f"{proxy.url}/page", timeout=5)  # no credentials: no lookup at all
    samples = scrape(proxy.url, answered=4)
    assert value(samples, "ory_wsgi_session_cache_lookups_total", result="miss") == 1
    assert value(samples, "ory_wsgi_session_cache_lookups_total", result="hit") == 2


def test_metrics_are_hidden_from_peers_outside_the_scrapers(metered_proxy: Start) -> None:
    proxy = metered_proxy(scrapers=("10.0.0.0/8",))
    assert requests.get(f"{proxy.url}{METRICS_PATH}", timeout=5).status_code == 404


def test_metrics_are_off_without_prometheus_multiproc_dir(
    dev_proxy: Callable[..., ThreadedServer], upstream: ThreadedServer
) -> None:
    proxy = dev_proxy(upstream=upstream.url)
    assert requests.get(f"{proxy.url}{METRICS_PATH}", timeout=5).status_code == 404


def test_gunicorn_workers_add_up_in_multiprocess_mode(
    upstream: ThreadedServer, tmp_path: Path
) -> None:
    directory = tmp_path / "prometheus"
    directory.mkdir()
    config = tmp_path / "ory.toml"
    config.write_text(f'[proxy]\nupstream = "{upstream.url}"\n')
    server = Gunicorn(
        f'ory_wsgi:make_app("{config}")',
        "--reuse-port",  # the kernel spreads connections over both workers
        workers=2,
        threads=2,
        cwd=tmp_path,
        env={"PROMETHEUS_MULTIPROC_DIR": str(directory)},
        port=free_port(),
    )
    try:
        for _ in range(20):
            assert requests.get(f"{server.url}/page", timeout=5).status_code == 200
        scrape(server.url, answered=20)
        # Whichever worker answers the scrape, it reports every worker's counts.
        totals = {
            value(
                scrape(server.url),
                "ory_wsgi_requests_total",
                route="app",
                decision="none",
                status="200",
            )
            for _ in range(6)
        }
    finally:
        server.stop()
    assert totals == {20}
    assert len({path.name for path in directory.glob("counter_*.db")}) == 2


def test_metrics_setting_switches_them_on(
    dev_proxy: Callable[..., ThreadedServer], upstream: ThreadedServer
) -> None:
    proxy = dev_proxy(upstream=upstream.url, metrics={"enabled": True})
    requests.get(f"{proxy.url}/page", timeout=5)
    samples = scrape(proxy.url, answered=1)
    assert value(samples, "ory_wsgi_requests_total", route="app", decision="none", status="200")


def test_metrics_path_setting_moves_the_endpoint_off_the_app(
    dev_proxy: Callable[..., ThreadedServer], upstream: ThreadedServer
) -> None:
    proxy = dev_proxy(upstream=upstream.url, metrics={"enabled": True, "path": "/internal/metrics"})
    moved = requests.get(f"{proxy.url}/internal/metrics", timeout=5)
    assert moved.status_code == 200
    assert "ory_wsgi_requests_total" in moved.text and "headers" not in moved.text
    assert requests.get(f"{proxy.url}{METRICS_PATH}", timeout=5).status_code == 404
    assert requests.get(f"{proxy.url}/internal/metrics/x", timeout=5).json()["method"] == "GET"


@pytest.mark.parametrize(
    "path", ["metrics", "/.ory/sessions/whoami", "/m?x=1", "/m%2F", "/m etrics", ""]
)
def test_metrics_path_must_be_a_plain_path_outside_ory(path: str) -> None:
    with pytest.raises(ConfigError, match=r"\[metrics\] path"):
        load_settings(None, env={}, overrides={"metrics": {"path": path}})


def test_metrics_settings_from_the_environment() -> None:
    settings = load_settings(
        None,
        env={"ORY_WSGI_METRICS_ENABLED": "1", "ORY_WSGI_METRICS_PATH": "/metrics"},
    )
    assert settings.metrics.enabled and settings.metrics.path == "/metrics"


# -- 499 means the client went away, by the access log's rule -----------------------------


def hello_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("302 Found", [("Location", "/next"), ("Content-Length", "11")])
    return [b"hello", b" world"]


def counted(metrics: Metrics, status: str) -> float | None:
    labels = {"route": "app", "decision": "none", "status": status}
    return metrics.registry.get_sample_value("ory_wsgi_requests_total", labels)


def test_body_the_server_stopped_sending_without_an_error_keeps_its_status() -> None:
    metrics = Metrics()
    response = Client(metrics.wrap(hello_app)).get("/x", buffered=False)
    response.close()  # the body was never iterated, and nothing failed
    assert (counted(metrics, "302"), counted(metrics, "499")) == (1.0, None)


@pytest.mark.parametrize("error", [BrokenPipeError, ConnectionResetError, TimeoutError])
def test_body_whose_write_to_the_client_failed_is_counted_499(error: type[OSError]) -> None:
    metrics = Metrics()
    body = metrics.wrap(hello_app)(
        {"REQUEST_METHOD": "GET", "PATH_INFO": "/x"}, lambda status, headers, *exc: None
    )
    # What gunicorn and werkzeug do: close() from a `finally` while the write error is raised.
    with pytest.raises(error):
        try:
            for _chunk in body:
                raise error()
        finally:
            body.close()  # type: ignore[attr-defined]
    assert (counted(metrics, "499"), counted(metrics, "302")) == (1.0, None)


def test_request_body_that_stopped_short_is_counted_499() -> None:
    def reading_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        environ["ory.client_gone"] = True  # what the forwarder records when the upload stops
        return hello_app(environ, start_response)

    metrics = Metrics()
    response = Client(metrics.wrap(reading_app)).get("/x", buffered=True)
    assert response.status_code == 302
    assert (counted(metrics, "499"), counted(metrics, "302")) == (1.0, None)
