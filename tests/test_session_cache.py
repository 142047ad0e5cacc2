"""The session cache: TTLs, the expires_at cap, LRU, single-flight, drop(), against a fake Ory."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from ory_wsgi.ory.cache import SessionCache
from ory_wsgi.ory.client import Credentials, Lookup, OryClient, extract_credentials

NAMES = frozenset({"ory_kratos_session"})
UNAUTHORIZED = {"error": {"code": 401, "status": "Unauthorized", "message": "x"}}


def session_json(*, expires_in: float = 3600.0) -> dict[str, Any]:
    expires = datetime.fromtimestamp(time.time() + expires_in, UTC).isoformat()
    return {"id": "s1", "active": True, "expires_at": expires, "identity": {"id": "user-1"}}


def credentials(value: str = "s1") -> Credentials:
    found = extract_credentials({"HTTP_COOKIE": f"ory_kratos_session={value}"}, NAMES)
    assert found is not None
    return found


@pytest.fixture
def client(ory: HTTPServer) -> Iterator[OryClient]:
    ory_client = OryClient(ory.url_for("/"), timeout=3.0, failure_threshold=100)
    yield ory_client
    ory_client.close()


def lookup_with(cache: SessionCache, client: OryClient) -> Callable[[Credentials], Lookup]:
    return lambda found: cache.get(found, lambda: client.whoami(found, "r"))


def calls(ory: HTTPServer, cookie: str | None = None) -> int:
    return sum(1 for request, _ in ory.log if cookie is None or cookie in request.headers["Cookie"])


def test_authenticated_lookup_is_served_from_cache(ory: HTTPServer, client: OryClient) -> None:
    ory.expect_request("/sessions/whoami").respond_with_json(session_json())
    lookup = lookup_with(SessionCache(ttl=10.0), client)
    first, second = lookup(credentials()), lookup(credentials())
    assert second is first and first.subject == "user-1"
    assert calls(ory) == 1


def test_authenticated_lookup_expires_after_ttl(ory: HTTPServer, client: OryClient) -> None:
    ory.expect_request("/sessions/whoami").respond_with_json(session_json())
    lookup = lookup_with(SessionCache(ttl=0.2), client)
    lookup(credentials())
    time.sleep(0.5)
    lookup(credentials())
    assert calls(ory) == 2


def test_cache_never_outlives_session_expires_at(ory: HTTPServer, client: OryClient) -> None:
    ory.expect_request("/sessions/whoami").respond_with_json(session_json(expires_in=0.3))
    lookup = lookup_with(SessionCache(ttl=60.0), client)
    lookup(credentials())
    lookup(credentials())
    assert calls(ory) == 1
    time.sleep(0.6)
    lookup(credentials())
    assert calls(ory) == 2


def test_already_expired_session_is_not_cached(ory: HTTPServer, client: OryClient) -> None:
    ory.expect_request("/sessions/whoami").respond_with_json(session_json(expires_in=-5))
    lookup = lookup_with(SessionCache(ttl=60.0), client)
    lookup(credentials())
    lookup(credentials())
    assert calls(ory) == 2


def test_anonymous_is_cached_for_negative_ttl(ory: HTTPServer, client: OryClient) -> None:
    ory.expect_request("/sessions/whoami").respond_with_json(UNAUTHORIZED, status=401)
    lookup = lookup_with(SessionCache(ttl=60.0, negative_ttl=0.2), client)
    lookup(credentials())
    lookup(credentials())
    assert calls(ory) == 1
    time.sleep(0.5)
    assert lookup(credentials()).outcome == "anonymous"
    assert calls(ory) == 2


@pytest.mark.parametrize("status", [400, 413, 431])
def test_credentials_ory_refuses_are_cached_like_anonymous_answers(
    ory: HTTPServer, client: OryClient, status: int
) -> None:
    """A client repeating what Ory refuses costs one call per negative_ttl, not one per request."""
    ory.expect_request("/sessions/whoami").respond_with_data("refused", status=status)
    lookup = lookup_with(SessionCache(ttl=10.0, negative_ttl=5.0), client)
    answers = [lookup(credentials("forged")) for _ in range(20)]
    assert {answer.outcome for answer in answers} == {"anonymous"}
    assert calls(ory) == 1


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, {"error": {"code": 500, "message": "x"}}),
        (429, {"error": {"code": 429, "message": "x"}}),
        (403, {"error": {"id": "session_aal2_required", "code": 403, "message": "x"}}),
    ],
    ids=["error", "rate_limited", "aal2_required"],
)
def test_errors_rate_limits_and_aal2_are_not_cached(
    ory: HTTPServer, client: OryClient, status: int, body: dict[str, Any]
) -> None:
    ory.expect_request("/sessions/whoami").respond_with_json(body, status=status)
    lookup = lookup_with(SessionCache(ttl=60.0, negative_ttl=60.0), client)
    lookup(credentials())
    lookup(credentials())
    assert calls(ory) == 2


def test_zero_ttl_turns_caching_off(ory: HTTPServer, client: OryClient) -> None:
    ory.expect_request("/sessions/whoami").respond_with_json(session_json())
    cache = SessionCache(ttl=0, negative_ttl=2.0)
    lookup = lookup_with(cache, client)
    lookup(credentials())
    lookup(credentials())
    assert calls(ory) == 2 and len(cache) == 0


def test_zero_ttl_turns_negative_caching_off(ory: HTTPServer, client: OryClient) -> None:
    ory.expect_request("/sessions/whoami").respond_with_json(UNAUTHORIZED, status=401)
    lookup = lookup_with(SessionCache(ttl=0, negative_ttl=2.0), client)
    lookup(credentials())
    lookup(credentials())
    assert calls(ory) == 2


def test_least_recently_used_entry_is_evicted(ory: HTTPServer, client: OryClient) -> None:
    ory.expect_request("/sessions/whoami").respond_with_json(session_json())
    cache = SessionCache(ttl=60.0, max_entries=2)
    lookup = lookup_with(cache, client)
    lookup(credentials("a"))
    lookup(credentials("b"))
    lookup(credentials("a"))
    lookup(credentials("c"))
    lookup(credentials("a"))
    assert calls(ory, "=a") == 1 and len(cache) == 2
    lookup(credentials("b"))
    assert calls(ory, "=b") == 2


def test_drop_forgets_the_session(ory: HTTPServer, client: OryClient) -> None:
    ory.expect_request("/sessions/whoami").respond_with_json(session_json())
    cache = SessionCache(ttl=60.0)
    lookup = lookup_with(cache, client)
    lookup(credentials())
    cache.drop(credentials())
    lookup(credentials())
    assert calls(ory) == 2


def run_together(count: int, work: Callable[[], Any]) -> list[Any]:
    """Run `work` in `count` threads released at once; return results or exceptions."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = work()
        except Exception as exc:
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def test_concurrent_first_lookups_share_one_call(ory: HTTPServer, client: OryClient) -> None:
    def slow(request: Request) -> Response:
        time.sleep(1.0)
        return Response(
            '{"active": true, "identity": {"id": "user-1"}}', mimetype="application/json"
        )

    ory.expect_request("/sessions/whoami").respond_with_handler(slow)
    lookup = lookup_with(SessionCache(ttl=60.0), client)
    results = run_together(30, lambda: lookup(credentials()))
    assert calls(ory) == 1
    assert all(isinstance(r, Lookup) and r.subject == "user-1" for r in results)


def test_failed_shared_call_raises_in_every_waiter_and_caches_nothing() -> None:
    fetches: list[int] = []

    def failing_fetch() -> Lookup:
        fetches.append(1)
        time.sleep(1.0)
        raise RuntimeError("fetch failed")

    cache = SessionCache(ttl=60.0)
    results = run_together(30, lambda: cache.get(credentials(), failing_fetch))
    assert len(fetches) == 1
    assert all(isinstance(r, RuntimeError) for r in results)
    assert len(cache) == 0


def test_zero_ttl_keeps_single_flight(ory: HTTPServer, client: OryClient) -> None:
    def slow(request: Request) -> Response:
        time.sleep(1.0)
        return Response(
            '{"active": true, "identity": {"id": "user-1"}}', mimetype="application/json"
        )

    ory.expect_request("/sessions/whoami").respond_with_handler(slow)
    lookup = lookup_with(SessionCache(ttl=0), client)
    results = run_together(10, lambda: lookup(credentials()))
    assert calls(ory) == 1 and all(isinstance(r, Lookup) for r in results)


def test_drop_during_lookup_keeps_its_answer_out_of_the_cache(
    ory: HTTPServer, client: OryClient
) -> None:
    cache = SessionCache(ttl=60.0)
    found = credentials()

    def slow(request: Request) -> Response:
        cache.drop(found)
        return Response(
            '{"active": true, "identity": {"id": "user-1"}}', mimetype="application/json"
        )

    ory.expect_request("/sessions/whoami").respond_with_handler(slow)
    assert cache.get(found, lambda: client.whoami(found, "r")).subject == "user-1"
    assert len(cache) == 0
