"""Revocation holds in all three modes: the proxy, the decisions endpoint and the middleware.

Two instances of each mode (two "workers", in-process, each with its own
memory cache kept 30 s) share one real Redis. A session both have cached is
ended in Ory and `ory_wsgi.revoke`d: both refuse it within 100 ms.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from servers import ThreadedServer
from werkzeug.test import Client

import ory_wsgi
from ory_wsgi.testing import FakeKratos

PROTECT = [{"prefix": "/members"}]
Ask = Callable[[Client, str], int]


def app_answer(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"members only"]


def through_proxy(client: Client, token: str) -> int:
    return client.get("/members/page", headers={"X-Session-Token": token}).status_code


def through_decisions(client: Client, token: str) -> int:
    forwarded = {
        "X-Forwarded-Method": "GET",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "app.example.com",
        "X-Forwarded-Uri": "/members/page",
        "Accept": "application/json",
        "X-Session-Token": token,
    }
    return client.get(
        "/.ory/proxy/decisions", headers=forwarded, environ_overrides={"REMOTE_ADDR": "127.0.0.1"}
    ).status_code


@pytest.mark.parametrize("mode", ["proxy", "decisions", "middleware"])
def test_a_revoked_session_is_refused_by_every_instance_of_every_mode(
    mode: str, fleet_redis: dict[str, Any], fake_ory: FakeKratos, upstream: ThreadedServer
) -> None:
    cache = {"backend": "redis", **fleet_redis, "ttl": "30s", "memory_ttl": "30s"}
    common: dict[str, Any] = {
        "sdk_url": fake_ory.url,
        "public_url": "https://app.example.com",
        "session_cache": cache,
        "protect": PROTECT,
    }
    ask: Ask = through_proxy
    if mode == "proxy":
        apps = [ory_wsgi.make_app(upstream=upstream.url, **common) for _ in range(2)]
    elif mode == "decisions":
        apps = [
            ory_wsgi.make_app(
                upstream=upstream.url,
                decisions={"enabled": True},
                trusted_proxies=["127.0.0.1/32"],
                **common,
            )
            for _ in range(2)
        ]
        ask = through_decisions
    else:
        apps = [ory_wsgi.OryMiddleware(app_answer, **common) for _ in range(2)]
    clients = [Client(app) for app in apps]
    identity = fake_ory.add_identity(f"{mode}@example.com", "pw")
    session, token = fake_ory.create_session(identity["id"])
    assert [ask(client, token) for client in clients] == [200, 200]
    time.sleep(0.3)  # each instance's revocation listener subscribes after its first miss
    fake_ory.reset_counters()
    assert [ask(client, token) for client in clients] == [200, 200]
    assert fake_ory.whoami_calls == 0  # both answer from memory

    fake_ory.revoke_session(str(session["id"]))
    ory_wsgi.revoke(str(session["id"]), session_cache=cache)
    revoked = time.monotonic()
    # In one process the listeners' threads need the GIL to read the message: poll.
    refused = [ask(client, token) for client in clients]
    while refused != [401, 401] and time.monotonic() - revoked < 0.1:
        time.sleep(0.005)
        refused = [ask(client, token) for client in clients]
    assert refused == [401, 401]
