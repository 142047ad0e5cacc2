"""The fleet on a real Redis Cluster (`[session_cache] redis_cluster = true`).

Three `redis-server --cluster-enabled yes` masters joined by `redis-cli
--cluster create`. Every multi-key script of the fleet must stay in one hash
slot, or the cluster refuses it (CROSSSLOT): the in-process tests below check
the slots and run each script; then the end-to-end fleet tests of
test_fleet_proxy.py, test_fleet_keys.py and test_fleet_modes.py run again here
with `fleet_redis` naming the cluster (shared session, revocation everywhere,
single-flight, the whoami budget, keys in Redis, every mode).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.cluster import RedisCluster
from servers import RedisClusterServers, free_port
from test_fleet_keys import (  # noqa: F401 (collected here again, on the cluster)
    test_every_worker_of_every_host_publishes_the_same_key_set,
    test_keys_rotate_reaches_every_worker_without_a_restart,
    two_proxies,
)
from test_fleet_modes import (  # noqa: F401 (collected here again, on the cluster)
    test_a_revoked_session_is_refused_by_every_instance_of_every_mode,
)
from test_fleet_proxy import (  # noqa: F401 (collected here again, on the cluster)
    fleet,
    test_concurrent_first_requests_on_two_proxies_cost_one_whoami,
    test_logout_through_one_proxy_ends_the_session_on_every_worker_of_both,
    test_one_keto_check_per_tuple_per_ttl_for_the_whole_fleet,
    test_revocation_reaches_workers_forked_from_a_preloaded_app,
    test_sessions_revoke_command_drops_a_session_everywhere,
    test_the_whoami_budget_holds_across_the_fleet_and_never_fails_open,
)
from test_fleet_store import (  # noqa: F401 (stop_listeners: autouse here too)
    Ory,
    Worker,
    credentials,
    redis_key,
    session_lookup,
    stop_listeners,
)

import ory_wsgi
from ory_wsgi.errors import ConfigError
from ory_wsgi.fleet.redis_link import RedisLink
from ory_wsgi.fleet.shared_keys import RedisKeySet, rotate_in_redis
from ory_wsgi.settings import load_settings


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    servers = RedisClusterServers(tmp_path_factory.mktemp("cluster"))
    yield servers
    servers.stop()


@pytest.fixture
def fleet_redis(cluster: RedisClusterServers) -> dict[str, Any]:
    """Overrides conftest's: the fleet tests imported above run on the cluster."""
    cluster.flush()
    return {"redis_url": cluster.url, "redis_cluster": True}


@pytest.fixture
def raw(cluster: RedisClusterServers) -> Iterator[RedisCluster]:
    cluster.flush()
    client = cluster.client()
    yield client
    client.close()


def test_each_scripts_keys_share_a_slot_and_sessions_spread_over_the_nodes(
    cluster: RedisClusterServers, raw: RedisCluster
) -> None:
    found = credentials()
    by_digest = {raw.keyslot(redis_key(kind, found)) for kind in ("s", "gone", "lock")}
    assert len(by_digest) == 1
    sid = "sess-1"
    assert raw.keyslot(f"ory_wsgi:v1:sid:{{{sid}}}") == raw.keyslot(
        f"ory_wsgi:v1:revoked:{{{sid}}}"
    )

    worker = Worker(cluster.url, redis_cluster=True)
    ory = Ory(session_lookup())
    for n in range(12):
        worker.get(credentials(f"ory_st_token-{n}"), ory.fetch)
    assert ory.calls == 12
    # The lookups landed on several masters: a real cluster, not one node.
    masters = [node for node in raw.get_primaries()]
    holding = [n for n in masters if raw.keys("ory_wsgi:v1:s:*", target_nodes=n)]
    assert len(masters) == 3 and len(holding) >= 2


def test_a_second_worker_reads_the_first_and_revoke_reaches_every_memory(
    cluster: RedisClusterServers, raw: RedisCluster
) -> None:
    ory = Ory(session_lookup("sess-c"))
    first, second = (Worker(cluster.url, redis_cluster=True, memory_ttl="30s") for _ in "ab")
    assert first.get(credentials(), ory.fetch).subject == "ident-1"
    assert second.get(credentials(), ory.fetch).authenticated
    assert ory.calls == 1
    first.listening()
    second.listening()

    assert ory_wsgi.revoke("sess-c", session_cache=fleet_settings(cluster)) == 1
    assert not raw.exists(redis_key("s", credentials()))
    assert raw.exists(redis_key("gone", credentials()))
    for worker in (first, second):
        for _ in range(100):  # the listener's thread needs the GIL: up to 100 ms
            if not len(worker.memory):
                break
            time.sleep(0.001)
        assert len(worker.memory) == 0
    # A whoami under way when it was revoked is not cached again (the sid marker).
    first.get(credentials(), ory.fetch)
    assert ory.calls == 2 and not raw.exists(redis_key("s", credentials()))


def test_concurrent_first_lookups_on_four_workers_cost_one_call(
    cluster: RedisClusterServers, raw: RedisCluster
) -> None:
    ory = Ory(session_lookup("sess-sf"), delay=0.3)
    workers = [Worker(cluster.url, redis_cluster=True) for _ in range(4)]
    threads = [threading.Thread(target=w.get, args=(credentials(), ory.fetch)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert ory.calls == 1


def test_the_whoami_budget_is_counted_once_for_the_cluster(
    cluster: RedisClusterServers, raw: RedisCluster
) -> None:
    ory = Ory(session_lookup())
    budget = {"max_calls_per_second": 3, "max_call_wait": 0}
    workers = [Worker(cluster.url, redis_cluster=True, ory=budget) for _ in range(2)]
    time.sleep(1.02 - time.time() % 1)
    outcomes = [
        workers[n % 2].get(credentials(f"ory_st_budget-{n}"), ory.fetch).outcome for n in range(8)
    ]
    assert ory.calls <= 6  # 3 a second; the 8 calls may straddle two seconds
    assert outcomes.count("error") == 8 - ory.calls >= 2


def test_the_key_set_lives_in_the_cluster_and_rotates(
    cluster: RedisClusterServers, raw: RedisCluster, tmp_path: Path
) -> None:
    link = RedisLink(cluster.url, cluster=True)
    RedisKeySet(link, str(tmp_path))  # the first start seeds the cluster
    seeded = raw.get("ory_wsgi:v1:jwks")
    assert seeded and (tmp_path / "jwks-redis.json").read_bytes() == seeded
    kid = rotate_in_redis(link)
    assert kid in raw.get("ory_wsgi:v1:jwks").decode()
    link.close()


def test_a_worker_starts_and_answers_while_the_cluster_is_unreachable() -> None:
    dead = f"redis://127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
    worker = Worker(dead, redis_cluster=True)  # the cluster client is built on first use
    ory = Ory(session_lookup())
    started = time.monotonic()
    assert worker.get(credentials("ory_st_a"), ory.fetch).authenticated
    assert worker.get(credentials("ory_st_b"), ory.fetch).authenticated
    assert time.monotonic() - started < 1.0 and ory.calls == 2
    assert worker.store.link.degraded().startswith("redis_unavailable: ")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("unix:///tmp/redis.sock", "a cluster is reached by"),
        ("redis+sentinel://s1:26379/main", "a cluster is reached by"),
        ("redis://127.0.0.1:7000/3", "only database 0"),
        ("redis://:pw@,", "no cluster host"),
    ],
)
def test_a_bad_cluster_url_is_a_one_line_config_error(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings = load_settings(
            env={},
            overrides={
                "session_cache": {"backend": "redis", "redis_url": url, "redis_cluster": True}
            },
        )
        RedisLink(url, cluster=settings.session_cache.redis_cluster)


def fleet_settings(cluster: RedisClusterServers) -> dict[str, Any]:
    return {"backend": "redis", "redis_url": cluster.url, "redis_cluster": True}
