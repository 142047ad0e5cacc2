"""The fleet end to end: two gunicorn proxies x 2 workers on one real Redis and the Ory stand-in.

Revocation reaches every worker of both proxies, concurrent first requests
cost one whoami in total, the whoami budget holds fleet-wide, and Redis can
die and come back mid-traffic without a 5xx. Handlers' answer caches
(`ory_permissions` and the Keto stand-in) are shared too: one Keto check per
tuple per TTL for the fleet, and still decisions (no 5xx) when Redis is lost.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from redis.cluster import RedisCluster
from servers import (
    ROOT,
    Gunicorn,
    RedisServer,
    ThreadedServer,
    free_port,
    log_records,
    toml_lines,
)

import ory_wsgi
from ory_wsgi.testing import FakeKratos
from ory_wsgi.testing.keto import FakeKeto

Fleet = Callable[..., list[Gunicorn]]
PROTECT = '[[protect]]\nprefix = "/members"\n'


@pytest.fixture
def fleet(
    start_proxy: Callable[..., Gunicorn],
    upstream: ThreadedServer,
    fake_ory: FakeKratos,
    fleet_redis: dict[str, Any],
) -> Fleet:
    """start(extra_toml="", ory_toml="", proxies=2, gunicorn_args=()) -> proxies of 2 workers
    each on `fleet_redis` (`redis_server`, or a cluster in test_fleet_cluster.py).

    `ory_toml` goes into the `[ory]` section, `extra_toml` after the last one.
    """

    def start(
        extra: str = "", ory: str = "", proxies: int = 2, gunicorn_args: tuple[str, ...] = ()
    ) -> list[Gunicorn]:
        started = []
        for _ in range(proxies):
            port = free_port()
            config = (
                f'[proxy]\nupstream = "{upstream.url}"\npublic_url = "http://127.0.0.1:{port}"\n'
                f'[ory]\nsdk_url = "{fake_ory.url}"\n{ory}'
                f'[session_cache]\nbackend = "redis"\n{toml_lines(fleet_redis)}'
                'ttl = "30s"\nmemory_ttl = "30s"\n'
                f"{extra}"
            )
            started.append(start_proxy(config, *gunicorn_args, workers=2, threads=8, port=port))
        return started

    return start


def new_session(fake_ory: FakeKratos, name: str) -> tuple[str, dict[str, str]]:
    identity = fake_ory.add_identity(f"{name}@example.com", "correct horse battery staple")
    session, token = fake_ory.create_session(identity["id"])
    return str(session["id"]), fake_ory.cookies(token)


def fetch(url: str, cookies: dict[str, str]) -> requests.Response:
    # A new connection each time, so gunicorn hands requests to any of its workers.
    return requests.get(url, cookies=cookies, headers={"Connection": "close"}, timeout=20)


def has_jwt(answer: requests.Response) -> bool:
    assert answer.status_code == 200, answer.text
    return "Authorization" in answer.json()["headers"]


def on_every_worker(proxies: list[Gunicorn], path: str, cookies: dict[str, str]) -> list[bool]:
    """JWT or not, for 12 concurrent requests to each proxy (so every worker answers some)."""
    urls = [f"{proxy.url}{path}" for proxy in proxies for _ in range(12)]
    with ThreadPoolExecutor(len(urls)) as pool:
        return list(pool.map(lambda url: has_jwt(fetch(url, cookies)), urls))


def test_logout_through_one_proxy_ends_the_session_on_every_worker_of_both(
    fleet: Fleet, fake_ory: FakeKratos
) -> None:
    proxies = fleet()
    _, cookies = new_session(fake_ory, "ada")
    assert all(on_every_worker(proxies, "/x", cookies))
    assert fake_ory.whoami_calls == 1  # 4 workers, 24 requests: one whoami

    out = requests.get(
        f"{proxies[0].url}/.ory/proxy/logout", cookies=cookies, allow_redirects=False, timeout=10
    )
    answered = time.monotonic()
    assert out.status_code == 303
    logout_link = out.headers["Location"]
    assert logout_link.startswith(f"{proxies[0].url}/.ory/self-service/logout?token=")
    fetch(logout_link, cookies)  # the browser's next step: Ory ends the session
    sent: list[tuple[float, bool]] = []

    def replay(url: str) -> None:
        at = time.monotonic() - answered
        sent.append((at, has_jwt(fetch(url, cookies))))

    urls = [f"{proxy.url}/x" for proxy in proxies for _ in range(12)]
    with ThreadPoolExecutor(len(urls)) as pool:
        list(pool.map(replay, urls))
    assert len(sent) == 24 and not any(jwt for _, jwt in sent)
    assert min(at for at, _ in sent) < 0.1, sorted(at for at, _ in sent)


def test_revocation_reaches_workers_forked_from_a_preloaded_app(
    fleet: Fleet, fake_ory: FakeKratos, fleet_redis: dict[str, Any]
) -> None:
    # --preload builds the app (and its Redis client) in the master, then forks:
    # each worker must start its own subscriber and its own connections.
    proxies = fleet(gunicorn_args=("--preload",))
    session_id, cookies = new_session(fake_ory, "fork")
    assert all(on_every_worker(proxies, "/x", cookies))
    assert fake_ory.whoami_calls == 1
    fake_ory.revoke_session(session_id)
    assert ory_wsgi.revoke(session_id, session_cache={"backend": "redis", **fleet_redis}) >= 1
    assert not any(on_every_worker(proxies, "/x", cookies))


def test_sessions_revoke_command_drops_a_session_everywhere(
    fleet: Fleet, fake_ory: FakeKratos, tmp_path: Path
) -> None:
    proxies = fleet()
    session_id, cookies = new_session(fake_ory, "bob")
    assert all(on_every_worker(proxies, "/x", cookies))
    fake_ory.revoke_session(session_id)  # ended in Ory: the caches still hold it for 30 s
    assert all(on_every_worker(proxies, "/x", cookies))

    config = tmp_path / "ory-0.toml"  # written by start_proxy for the first proxy
    done = subprocess.run(
        [sys.executable, "-m", "ory_wsgi.cli", "sessions", "revoke", session_id, "-c", str(config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert f"revoked session {session_id}" in done.stdout
    assert not any(on_every_worker(proxies, "/x", cookies))


def test_concurrent_first_requests_on_two_proxies_cost_one_whoami(
    fleet: Fleet, fake_ory: FakeKratos
) -> None:
    proxies = fleet()
    _, cookies = new_session(fake_ory, "cy")
    fake_ory.reset_counters()
    fake_ory.whoami_delay = 0.3
    assert all(on_every_worker(proxies, "/x", cookies))
    assert fake_ory.whoami_calls == 1


def test_the_whoami_budget_holds_across_the_fleet_and_never_fails_open(
    fleet: Fleet, fake_ory: FakeKratos
) -> None:
    proxies = fleet(PROTECT, ory="max_calls_per_second = 2\nmax_call_wait = 0\n")
    sessions = [new_session(fake_ory, f"user{n}")[1] for n in range(10)]
    fake_ory.reset_counters()
    time.sleep(1.05 - time.time() % 1)
    urls = [(f"{proxies[n % 2].url}/members/page", c) for n, c in enumerate(sessions)]
    with ThreadPoolExecutor(len(urls)) as pool:
        answers = list(pool.map(lambda pair: fetch(*pair), urls))
    statuses = sorted(a.status_code for a in answers)
    assert fake_ory.whoami_calls <= 4  # 2 a second; the burst may straddle two seconds
    assert statuses.count(200) == fake_ory.whoami_calls
    refused = [a for a in answers if a.status_code != 200]
    assert len(refused) >= 6
    assert all(a.status_code == 503 and a.headers["Retry-After"] for a in refused)
    # An open path over budget goes on, anonymous.
    late = [new_session(fake_ory, f"late{n}")[1] for n in range(6)]
    time.sleep(1.05 - time.time() % 1)
    with ThreadPoolExecutor(6) as pool:
        opened = list(pool.map(lambda c: fetch(f"{proxies[0].url}/x", c), late))
    assert all(a.status_code == 200 for a in opened)
    assert sum(not has_jwt(a) for a in opened) >= 4
    logged = [
        r
        for p in proxies
        for r in log_records(p.log())
        if r.get("msg", "").startswith("rate_limited")
    ]
    assert logged


def test_redis_killed_mid_traffic_no_5xx_degraded_then_shared_again(
    fleet: Fleet, fake_ory: FakeKratos, redis_server: RedisServer
) -> None:
    proxies = fleet(PROTECT)
    sessions = [new_session(fake_ory, f"load{n}")[1] for n in range(6)]
    statuses: list[int] = []
    jwt_missing: list[int] = []
    stop = threading.Event()

    def traffic(n: int) -> None:
        while not stop.is_set():
            answer = fetch(f"{proxies[n % 2].url}/members/{n}", sessions[n % len(sessions)])
            statuses.append(answer.status_code)
            if answer.status_code == 200 and "Authorization" not in answer.json()["headers"]:
                jwt_missing.append(n)

    threads = [threading.Thread(target=traffic, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.0)
        redis_server.stop()
        time.sleep(1.0)
        ready = [requests.get(f"{p.url}/.ory/proxy/health/ready", timeout=20) for p in proxies * 3]
        assert all(r.status_code == 200 for r in ready)
        assert any(r.json().get("degraded") is True for r in ready)
        assert all(
            r.json()["reason"].startswith("redis_unavailable")
            for r in ready
            if r.json().get("degraded")
        )
        time.sleep(1.0)
        redis_server.start()
        time.sleep(1.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)
    assert len(statuses) > 50
    assert set(statuses) == {200}, sorted(set(statuses))
    assert not jwt_missing

    # Within 15 s of Redis' return every worker uses it again.
    deadline = time.monotonic() + 15
    clean = 0
    while clean < 8 and time.monotonic() < deadline:
        answers = [requests.get(f"{p.url}/.ory/proxy/health/ready", timeout=20) for p in proxies]
        clean = clean + 2 if not any(a.json().get("degraded") for a in answers) else 0
    assert clean >= 8
    _, cookies = new_session(fake_ory, "after")
    fake_ory.reset_counters()
    assert all(on_every_worker(proxies, "/x", cookies))
    assert fake_ory.whoami_calls == 1


def test_redis_and_ory_down_protected_paths_fail_closed(
    fleet: Fleet, fake_ory: FakeKratos, redis_server: RedisServer
) -> None:
    proxies = fleet(PROTECT)
    _, cookies = new_session(fake_ory, "dee")
    redis_server.stop()
    fake_ory.fail_whoami(503)
    for proxy in proxies:
        closed = fetch(f"{proxy.url}/members/x", cookies)
        assert closed.status_code == 503 and closed.headers["Retry-After"]
        assert not has_jwt(fetch(f"{proxy.url}/x", cookies))


ANSWERS_RULE = """
[authenticators.cookie_session]
enabled = true
[authorizers.ory_permissions]
enabled = true
[mutators.noop]
enabled = true
[errors.handlers.json]
enabled = true

[[rule]]
id = "documents"
match = {{ methods = ["GET"], url = "http://<[^/]+>/docs/<[^/]+>" }}
authenticators = [{{ handler = "cookie_session" }}]
mutators = [{{ handler = "noop" }}]

[rule.authorizer]
handler = "ory_permissions"

[rule.authorizer.config]
url = "{keto}"
namespace = "documents"
object = "{{{{ index .MatchContext.RegexpCaptureGroups 1 }}}}"
relation = "view"
subject_id = "{{{{ .Subject }}}}"
cache = {{ ttl = "30s" }}
"""


def keto_user(fake_ory: FakeKratos, name: str) -> tuple[str, dict[str, str]]:
    """(identity id: the rule's subject, session cookies)."""
    identity = fake_ory.add_identity(f"{name}@example.com", "correct horse battery staple")
    _, token = fake_ory.create_session(identity["id"])
    return str(identity["id"]), fake_ory.cookies(token)


def statuses_everywhere(proxies: list[Any], path: str, cookies: dict[str, str]) -> list[int]:
    """Statuses of 12 concurrent requests to each proxy (every worker answers some)."""
    urls = [f"{proxy.url}{path}" for proxy in proxies for _ in range(12)]
    with ThreadPoolExecutor(len(urls)) as pool:
        return [answer.status_code for answer in pool.map(lambda u: fetch(u, cookies), urls)]


def answer_keys(client: redis.Redis | RedisCluster) -> list[bytes]:
    if isinstance(client, RedisCluster):
        return list(client.keys("ory_wsgi:v1:answer:*", target_nodes=RedisCluster.PRIMARIES))
    return list(client.keys("ory_wsgi:v1:answer:*"))


def raw_client(fleet_redis: dict[str, Any]) -> redis.Redis | RedisCluster:
    url = fleet_redis["redis_url"]
    if fleet_redis.get("redis_cluster"):
        host, _, port = url.removeprefix("redis://").split(",")[0].rpartition(":")
        return RedisCluster(host=host, port=int(port))
    return redis.Redis.from_url(url)


def test_one_keto_check_per_tuple_per_ttl_for_the_whole_fleet(
    fleet: Fleet, fake_ory: FakeKratos, fake_keto: FakeKeto, fleet_redis: dict[str, Any]
) -> None:
    proxies = fleet(ANSWERS_RULE.format(keto=fake_keto.url))
    identity, cookies = keto_user(fake_ory, "ada")
    fake_keto.add("documents", "doc-1", "view", subject_id=identity)
    assert fetch(f"{proxies[1].url}/docs/doc-2", cookies).status_code == 403
    assert statuses_everywhere(proxies, "/docs/doc-2", cookies) == [403] * 24

    fake_keto.delay = 0.3  # concurrent first requests on 4 workers wait for one check
    assert statuses_everywhere(proxies, "/docs/doc-1", cookies) == [200] * 24
    fake_keto.delay = 0.0
    assert fake_keto.check_calls == 2  # 50 requests on 4 workers: one check per tuple

    client = raw_client(fleet_redis)
    keys = answer_keys(client)
    assert len(keys) == 2
    for key in keys:
        assert key.startswith(b"ory_wsgi:v1:answer:ory_permissions:")
        blob = key + client.get(key)
        assert b"doc-1" not in blob and b"doc-2" not in blob and identity.encode() not in blob
    client.close()


def test_redis_stopped_every_worker_still_decides_without_a_5xx(
    fleet: Fleet, fake_ory: FakeKratos, fake_keto: FakeKeto, redis_server: RedisServer
) -> None:
    proxies = fleet(ANSWERS_RULE.format(keto=fake_keto.url))
    identity, cookies = keto_user(fake_ory, "bo")
    fake_keto.add("documents", "doc-1", "view", subject_id=identity)
    assert statuses_everywhere(proxies, "/docs/doc-1", cookies) == [200] * 24

    redis_server.stop()
    started = time.monotonic()
    assert statuses_everywhere(proxies, "/docs/doc-1", cookies) == [200] * 24
    assert (
        statuses_everywhere(proxies, "/docs/doc-3", cookies) == [403] * 24
    )  # Keto asked: Redis is out
    fake_keto.add("documents", "doc-4", "view", subject_id=identity)
    assert statuses_everywhere(proxies, "/docs/doc-4", cookies) == [200] * 24
    assert time.monotonic() - started < 10
    redis_server.start()
