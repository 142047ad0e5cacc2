"""The fleet's Redis tier in-process: several workers' caches on one real redis-server.

Each "worker" here is what `ory_layers` builds per gunicorn worker: a memory
SessionCache with the Redis store behind it (`attach_fleet`). The end-to-end
runs under gunicorn are in test_fleet_proxy.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from servers import RedisServer, free_port, wait_for_port
from werkzeug.test import Client

import ory_wsgi
from ory_wsgi import cli
from ory_wsgi.errors import ConfigError
from ory_wsgi.fleet.session_store import SharedSessionStore
from ory_wsgi.fleet.wiring import attach_fleet, memory_ttl
from ory_wsgi.ory.cache import SessionCache
from ory_wsgi.ory.client import ANONYMOUS, FAILED, Credentials, Lookup, extract_credentials
from ory_wsgi.pipeline.decision_cache import DecisionCache
from ory_wsgi.pipeline.services import Services
from ory_wsgi.settings import load_settings
from ory_wsgi.testing import FakeKratos

COOKIE_NAMES = frozenset({"ory_kratos_session"})


class Worker:
    """One worker's session cache, wired to the fleet from settings as make_app does."""

    started: list[Worker] = []

    def __init__(self, url: str, **session_cache: Any) -> None:
        ory = session_cache.pop("ory", {})
        self.settings = load_settings(
            env={},
            overrides={
                "session_cache": {"backend": "redis", "redis_url": url, **session_cache},
                "ory": ory,
            },
        )
        cache = self.settings.session_cache
        self.memory = SessionCache(memory_ttl(self.settings), cache.negative_ttl, cache.max_entries)
        store = attach_fleet(self.settings, self.memory)
        assert store is not None
        self.store: SharedSessionStore = store
        Worker.started.append(self)

    def get(self, credentials: Credentials, fetch: Callable[[], Lookup]) -> Lookup:
        return self.memory.get(credentials, fetch)

    def listening(self) -> None:
        listener = self.store.listener
        assert listener is not None
        listener.ensure_running()
        assert listener.subscribed.wait(5), "the revocation listener did not subscribe"


class Ory:
    """A counting whoami stand-in for in-process tests: `fetch` answers `lookup`."""

    def __init__(self, lookup: Lookup, delay: float = 0.0) -> None:
        self.lookup = lookup
        self.delay = delay
        self.calls = 0
        self._lock = threading.Lock()

    def fetch(self) -> Lookup:
        with self._lock:
            self.calls += 1
        time.sleep(self.delay)
        return self.lookup


def session_lookup(session_id: str = "sess-1", expires_in: float = 3600.0) -> Lookup:
    expires_at = time.time() + expires_in
    session = {"id": session_id, "active": True, "identity": {"id": "ident-1"}}
    return Lookup("authenticated", session=session, subject="ident-1", expires_at=expires_at)


def credentials(token: str = "ory_st_secret-token-value") -> Credentials:
    found = extract_credentials(
        {"HTTP_COOKIE": f"ory_kratos_session=cookie-{token}", "HTTP_X_SESSION_TOKEN": token},
        COOKIE_NAMES,
    )
    assert found is not None
    return found


def redis_key(kind: str, found: Credentials) -> str:
    """Where the fleet keeps `kind` ("s", "lock", "gone") for these credentials: tagged by
    their digest, so that a cluster keeps them in one slot."""
    return f"ory_wsgi:v1:{kind}:{{{found.cache_key.hex()}}}"


@pytest.fixture(autouse=True)
def stop_listeners() -> Iterator[None]:
    """Each in-process worker's revocation thread ends with its test."""
    yield
    for worker in Worker.started:
        if worker.store.listener is not None:
            worker.store.listener.stop()
    Worker.started.clear()


@pytest.fixture
def raw(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


def test_a_second_worker_reads_the_first_workers_answer(redis_server: RedisServer) -> None:
    ory = Ory(session_lookup())
    first, second = Worker(redis_server.url), Worker(redis_server.url)
    assert first.get(credentials(), ory.fetch).subject == "ident-1"
    lookup = second.get(credentials(), ory.fetch)
    assert lookup.authenticated and lookup.subject == "ident-1"
    assert lookup.session == ory.lookup.session
    assert ory.calls == 1


def test_redis_holds_digests_never_cookies_or_tokens(
    redis_server: RedisServer, raw: redis.Redis
) -> None:
    token = "ory_st_thisIsTheSecretSessionToken"
    Worker(redis_server.url).get(credentials(token), Ory(session_lookup()).fetch)
    keys = raw.keys("*")
    assert keys and all(key.startswith(b"ory_wsgi:v1:") for key in keys)
    for key in keys:
        kind = raw.type(key)
        values = [raw.get(key)] if kind == b"string" else list(raw.smembers(key))
        for blob in [key, *values]:
            assert b"thisIsTheSecret" not in blob
            assert b"ory_st_" not in blob
    assert raw.exists(redis_key("s", credentials(token)))


def test_a_cached_session_never_outlives_its_expires_at(
    redis_server: RedisServer, raw: redis.Redis
) -> None:
    ory = Ory(session_lookup(expires_in=1.0))
    Worker(redis_server.url, ttl="60s").get(credentials(), ory.fetch)
    key = redis_key("s", credentials())
    assert 0 < raw.pttl(key) <= 1000
    time.sleep(1.1)
    assert not raw.exists(key)
    Worker(redis_server.url, ttl="60s").get(credentials(), ory.fetch)
    assert ory.calls == 2


def test_a_401_is_shared_briefly(redis_server: RedisServer, raw: redis.Redis) -> None:
    ory = Ory(ANONYMOUS)
    Worker(redis_server.url, negative_ttl="300ms").get(credentials(), ory.fetch)
    key = redis_key("s", credentials())
    assert 0 < raw.pttl(key) <= 300
    assert Worker(redis_server.url).get(credentials(), ory.fetch).outcome == "anonymous"
    assert ory.calls == 1
    time.sleep(0.35)
    Worker(redis_server.url).get(credentials(), ory.fetch)
    assert ory.calls == 2


def test_an_error_is_never_shared(redis_server: RedisServer, raw: redis.Redis) -> None:
    ory = Ory(FAILED)
    assert Worker(redis_server.url).get(credentials(), ory.fetch).outcome == "error"
    assert Worker(redis_server.url).get(credentials(), ory.fetch).outcome == "error"
    assert ory.calls == 2
    assert raw.keys("ory_wsgi:v1:s:*") == []


def test_concurrent_first_lookups_on_four_workers_cost_one_call(
    redis_server: RedisServer,
) -> None:
    ory = Ory(session_lookup(), delay=0.3)
    workers = [Worker(redis_server.url) for _ in range(4)]
    results: list[Lookup] = []
    barrier = threading.Barrier(16)

    def ask(worker: Worker) -> None:
        barrier.wait()
        results.append(worker.get(credentials(), ory.fetch))

    threads = [threading.Thread(target=ask, args=(w,)) for w in workers for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(results) == 16 and all(r.subject == "ident-1" for r in results)
    assert ory.calls == 1


def test_waiters_share_an_answer_that_is_not_cached(redis_server: RedisServer) -> None:
    ory = Ory(Lookup("rate_limited", retry_after="7"), delay=0.3)
    workers = [Worker(redis_server.url) for _ in range(3)]
    results: list[Lookup] = []
    barrier = threading.Barrier(3)

    def ask(worker: Worker) -> None:
        barrier.wait()
        results.append(worker.get(credentials(), ory.fetch))

    threads = [threading.Thread(target=ask, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert [r.retry_after for r in results] == ["7", "7", "7"]
    assert ory.calls == 1


def test_a_lost_lock_holder_blocks_nobody_past_the_deadline(
    redis_server: RedisServer, raw: redis.Redis
) -> None:
    # A worker that took the lock and died: its lock would stay for 60 s.
    raw.set(redis_key("lock", credentials()), "dead-worker", px=60_000)
    worker = Worker(redis_server.url, ory={"timeout": "500ms", "max_call_wait": 0})
    ory = Ory(session_lookup())
    started = time.monotonic()
    assert worker.get(credentials(), ory.fetch).authenticated
    waited = time.monotonic() - started
    assert 0.9 <= waited < 3.0, waited  # lock_timeout = 0.5 s + 0 + 0.5 s margin
    assert ory.calls == 1


def test_revoke_drops_the_session_from_redis_and_every_workers_memory(
    redis_server: RedisServer, raw: redis.Redis
) -> None:
    ory = Ory(session_lookup("sess-42"))
    workers = [Worker(redis_server.url, memory_ttl="30s") for _ in range(3)]
    for worker in workers:
        worker.listening()
        worker.get(credentials(), ory.fetch)
        worker.get(credentials("ory_st_other-device"), ory.fetch)
        assert len(worker.memory) == 2
    assert ory.calls == 1 + 1

    started = time.monotonic()
    dropped = ory_wsgi.revoke(
        "sess-42", session_cache={"backend": "redis", "redis_url": redis_server.url}
    )
    assert dropped == 2
    while any(len(w.memory) for w in workers) and time.monotonic() - started < 1:
        time.sleep(0.001)
    elapsed = time.monotonic() - started
    assert [len(w.memory) for w in workers] == [0, 0, 0]
    assert elapsed < 0.1, elapsed
    assert raw.keys("ory_wsgi:v1:s:*") == []
    ory.lookup = ANONYMOUS
    assert workers[1].get(credentials(), ory.fetch).outcome == "anonymous"


def test_a_lookup_under_way_when_revoked_is_not_cached(
    redis_server: RedisServer, raw: redis.Redis
) -> None:
    ory = Ory(session_lookup("sess-7"), delay=0.4)
    worker = Worker(redis_server.url)
    thread = threading.Thread(target=worker.get, args=(credentials(), ory.fetch))
    thread.start()
    time.sleep(0.1)
    ory_wsgi.revoke("sess-7", session_cache={"backend": "redis", "redis_url": redis_server.url})
    thread.join(5)
    assert ory.calls == 1
    assert raw.keys("ory_wsgi:v1:s:*") == []


def test_redis_down_falls_back_to_ory_within_redis_timeout_then_recovers(
    redis_server: RedisServer,
) -> None:
    worker = Worker(redis_server.url, redis_timeout="200ms")
    other = Worker(redis_server.url)
    ory = Ory(session_lookup())
    redis_server.stop()
    started = time.monotonic()
    assert worker.get(credentials("ory_st_a"), ory.fetch).authenticated
    assert time.monotonic() - started < 0.2 + 0.25  # redis_timeout, and a loaded machine
    assert worker.store.link.degraded().startswith("redis_unavailable")
    # Out: not asked again for a while, so no request pays the timeout twice.
    started = time.monotonic()
    assert worker.get(credentials("ory_st_b"), ory.fetch).authenticated
    assert time.monotonic() - started < 0.15
    redis_server.start()
    deadline = time.monotonic() + 15
    while worker.store.link.degraded() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert worker.store.link.degraded() == ""
    calls = ory.calls
    worker.get(credentials("ory_st_c"), ory.fetch)
    other.get(credentials("ory_st_c"), ory.fetch)
    assert ory.calls == calls + 1


def test_a_hanging_redis_holds_a_request_no_longer_than_redis_timeout(
    redis_server: RedisServer,
) -> None:
    worker = Worker(redis_server.url, redis_timeout="200ms")
    ory = Ory(session_lookup())
    assert worker.get(credentials("ory_st_warm"), ory.fetch).authenticated
    redis_server.pause()
    try:
        started = time.monotonic()
        assert worker.get(credentials("ory_st_new"), ory.fetch).authenticated
        assert time.monotonic() - started < 0.2 + 0.25
        assert worker.store.link.degraded().startswith("redis_unavailable: TimeoutError")
        started = time.monotonic()
        assert worker.get(credentials("ory_st_other"), ory.fetch).authenticated
        assert time.monotonic() - started < 0.15
    finally:
        redis_server.resume()
    deadline = time.monotonic() + 15
    while worker.store.link.degraded() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert worker.store.link.degraded() == ""


def test_the_whoami_budget_is_shared_by_all_workers(redis_server: RedisServer) -> None:
    budget = {"max_calls_per_second": 3, "max_call_wait": 0}
    workers = [Worker(redis_server.url, ory=dict(budget)) for _ in range(4)]
    ory = Ory(session_lookup())
    # Start just after a second begins so that all calls fall into one window.
    time.sleep(1.05 - time.time() % 1)
    results = [
        w.get(credentials(f"ory_st_{i}-{n}"), ory.fetch)
        for n, w in enumerate(workers)
        for i in range(2)
    ]
    assert ory.calls == 3
    refused = [r for r in results if r.outcome == "error"]
    assert len(refused) == 5 and all(r.error == "whoami_budget" for r in refused)


def test_revoke_needs_the_redis_backend() -> None:
    with pytest.raises(ConfigError, match="backend"):
        ory_wsgi.revoke("sess-1", session_cache={"backend": "memory"})


def test_revoke_says_when_redis_cannot_be_reached(redis_server: RedisServer) -> None:
    redis_server.stop()
    with pytest.raises(ory_wsgi.RevocationFailed, match="Redis did not answer"):
        ory_wsgi.revoke("sess-1", session_cache={"backend": "redis", "redis_url": redis_server.url})


@pytest.mark.parametrize(
    ("session_cache", "message"),
    [
        ({"backend": "memcached"}, "must be memory or redis"),
        ({"backend": "redis"}, "redis needs \\[session_cache\\] redis_url"),
        ({"backend": "redis", "redis_url": "http://cache:6379"}, "expected a redis://"),
        ({"backend": "redis", "redis_url": "redis://[::1"}, "Invalid IPv6 URL"),
        ({"backend": "redis", "redis_url": "redis://h", "redis_timeout": 0}, "more than 0"),
    ],
)
def test_bad_fleet_settings_are_one_line_errors(
    session_cache: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(env={}, overrides={"session_cache": session_cache})


def test_the_redis_url_comes_from_the_environment_and_is_masked() -> None:
    settings = load_settings(
        env={
            "ORY_WSGI_SESSION_CACHE_BACKEND": "redis",
            "ORY_WSGI_SESSION_CACHE_REDIS_URL": "redis://:pw@cache:6379/1",
        }
    )
    assert settings.session_cache.redis_url == "redis://:pw@cache:6379/1"
    from ory_wsgi.settings import describe

    assert describe(settings)["session_cache"]["redis_url"] == "********"


def test_sessions_revoke_command_exit_codes(
    redis_server: RedisServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "ory.toml"
    config.write_text(f'[session_cache]\nbackend = "redis"\nredis_url = "{redis_server.url}"\n')
    assert cli.main(["sessions", "revoke", "sess-9", "-c", str(config)]) == 0
    assert "revoked session sess-9" in capsys.readouterr().out
    redis_server.stop()
    assert cli.main(["sessions", "revoke", "sess-9", "-c", str(config)]) == 1
    assert "Redis did not answer" in capsys.readouterr().err
    config.write_text('[session_cache]\nbackend = "memory"\n')
    assert cli.main(["sessions", "revoke", "sess-9", "-c", str(config)]) == 2
    assert 'needs [session_cache] backend = "redis"' in capsys.readouterr().err


def test_readiness_says_degraded_only_while_redis_is_out(
    redis_server: RedisServer, fake_ory: FakeKratos
) -> None:
    app = ory_wsgi.make_app(
        upstream="http://127.0.0.1:9",
        sdk_url=fake_ory.url,
        session_cache={"backend": "redis", "redis_url": redis_server.url},
    )
    client = Client(app)
    ready = client.get("/.ory/proxy/health/ready")
    assert ready.status_code == 200 and ready.json == {"status": "ok"}
    redis_server.stop()
    _, token = fake_ory.create_session(fake_ory.add_identity("r@example.com", "pw")["id"])
    client.get("/x", headers={"X-Session-Token": token})  # a miss meets the dead Redis
    ready = client.get("/.ory/proxy/health/ready")
    assert ready.status_code == 200
    assert ready.json is not None and ready.json["degraded"] is True
    assert ready.json["reason"].startswith("redis_unavailable: ")


def test_the_memory_backend_budget_counts_per_worker() -> None:
    settings = load_settings(
        env={}, overrides={"ory": {"max_calls_per_second": 2, "max_call_wait": 0}}
    )
    memory = SessionCache(memory_ttl(settings), 2.0, 100)
    assert attach_fleet(settings, memory) is None
    ory = Ory(session_lookup())
    time.sleep(1.05 - time.time() % 1)
    outcomes = [memory.get(credentials(f"ory_st_{n}"), ory.fetch).outcome for n in range(4)]
    assert outcomes == ["authenticated", "authenticated", "error", "error"]
    assert ory.calls == 2
    assert memory.get(credentials("ory_st_0"), ory.fetch).outcome == "authenticated"  # a hit
    assert ory.calls == 2


def test_a_sentinel_url_reaches_the_master_the_sentinels_name(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    port = free_port()
    config = tmp_path / "sentinel.conf"
    config.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor fleet 127.0.0.1 {redis_server.port} 1\n"
    )
    sentinel = subprocess.Popen(
        ["redis-server", str(config), "--sentinel"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, process=sentinel)
        ory = Ory(session_lookup())
        through_sentinel = Worker(f"redis+sentinel://127.0.0.1:{port},127.0.0.1:1/fleet/0")
        assert through_sentinel.get(credentials(), ory.fetch).authenticated
        assert Worker(redis_server.url).get(credentials(), ory.fetch).authenticated
        assert ory.calls == 1
    finally:
        sentinel.kill()
        sentinel.wait()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+sentinel://127.0.0.1:26379", "service name"),
        ("redis+sentinel://127.0.0.1:26379/fleet/zero", "service name"),
    ],
)
def test_a_bad_sentinel_url_is_a_config_error(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Worker(url)


def test_without_redis_py_the_redis_backend_is_a_one_line_config_error() -> None:
    # A fresh interpreter in which `import redis` fails, as when the extra is not installed.
    script = (
        "import sys; sys.modules['redis'] = None\n"
        "import ory_wsgi\n"
        "try:\n"
        "    ory_wsgi.make_app(upstream='http://127.0.0.1:9', sdk_url='http://127.0.0.1:8',\n"
        "        session_cache={'backend': 'redis', 'redis_url': 'redis://127.0.0.1:1/0'})\n"
        "except ory_wsgi.ConfigError as exc:\n"
        "    print(exc)\n"
        "ory_wsgi.make_app(upstream='http://127.0.0.1:9', sdk_url='http://127.0.0.1:8')\n"
        "print('memory backend ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "[session_cache] backend = \"redis\" needs redis-py: pip install 'ory_wsgi[redis]'",
        "memory backend ok",
    ]


def answers(url: str, memory_ttl: str = "1s") -> DecisionCache[dict[str, Any]]:
    """A handler's answer cache as `Services.decision_cache` builds it for one worker."""
    settings = load_settings(
        env={},
        overrides={
            "session_cache": {"backend": "redis", "redis_url": url, "memory_ttl": memory_ttl}
        },
    )
    services = Services(settings, "http://app", None, None, None, frozenset())
    return services.decision_cache("test_handler", lambda answer: float(answer["ttl"]))


def test_handler_answers_are_shared_and_kept_in_memory_at_most_memory_ttl(
    redis_server: RedisServer, raw: redis.Redis
) -> None:
    asked: list[str] = []

    def check(answer: str, ttl: float = 30.0) -> Callable[[], dict[str, Any]]:
        return lambda: asked.append(answer) or {"answer": answer, "ttl": ttl}

    first, second = answers(redis_server.url, "200ms"), answers(redis_server.url, "200ms")
    key = ("documents", "doc-1", "view", "user:ada")
    assert first.get(key, check("allowed"))["answer"] == "allowed"
    assert second.get(key, check("other"))["answer"] == "allowed"
    assert asked == ["allowed"]
    (stored,) = raw.keys("ory_wsgi:v1:answer:test_handler:*")
    assert b"doc-1" not in stored + raw.get(stored) and 29_000 < raw.pttl(stored) <= 30_000

    raw.set(stored, json.dumps({"v": {"answer": "denied", "ttl": 30}, "exp": time.time() + 30}))
    assert second.get(key, check("other"))["answer"] == "allowed"  # from memory
    time.sleep(0.25)
    assert second.get(key, check("other"))["answer"] == "denied"  # memory_ttl over: Redis
    raw.set(stored, b"not json")
    time.sleep(0.25)
    assert second.get(key, check("fresh"))["answer"] == "fresh"  # unreadable: a miss
    assert asked == ["allowed", "fresh"]
    # An answer with 0 s to live is neither shared nor kept.
    assert first.get(("x",), check("once", ttl=0))["answer"] == "once"
    assert first.get(("x",), check("twice", ttl=0))["answer"] == "twice"
    assert len(raw.keys("ory_wsgi:v1:answer:test_handler:*")) == 1


def test_handler_answers_go_on_from_memory_and_the_service_while_redis_is_out(
    redis_server: RedisServer,
) -> None:
    cache = answers(redis_server.url, "30s")
    calls: list[int] = []

    def check() -> dict[str, Any]:
        calls.append(1)
        return {"answer": "allowed", "ttl": 30}

    cache.get(("a",), check)
    redis_server.pause()
    try:
        started = time.monotonic()
        assert cache.get(("a",), check)["answer"] == "allowed"  # memory
        assert cache.get(("b",), check)["answer"] == "allowed"  # Redis hangs: the service
        assert cache.get(("c",), check)["answer"] == "allowed"  # Redis marked out: at once
        assert time.monotonic() - started < 0.6 and len(calls) == 3
    finally:
        redis_server.resume()


def test_a_handler_answers_lost_lock_holder_blocks_nobody_past_its_deadline(
    redis_server: RedisServer, raw: redis.Redis
) -> None:
    cache = answers(redis_server.url)
    assert cache.shared is not None
    cache.shared.lock_timeout = 0.3  # type: ignore[attr-defined]
    key = ("documents", "doc-9", "view", "user:ada")
    lock = cache.shared.redis_key(key) + ":lock"  # type: ignore[attr-defined]
    raw.set(lock, "a-worker-that-died", px=60_000)
    started = time.monotonic()
    assert cache.get(key, lambda: {"answer": "allowed", "ttl": 30})["answer"] == "allowed"
    assert 0.3 <= time.monotonic() - started < 1.0
