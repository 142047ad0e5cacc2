"""DecisionCache: TTL, LRU bound, single-flight under threads, errors never kept."""

from __future__ import annotations

import threading
import time

import pytest

from ory_wsgi.pipeline.decision_cache import DecisionCache


def test_answers_are_kept_for_their_lifetime_then_asked_again() -> None:
    calls: list[str] = []
    cache: DecisionCache[bool] = DecisionCache(lambda allowed: 0.2 if allowed else 0.0)

    def fetch(answer: bool) -> bool:
        calls.append("x")
        return answer

    assert cache.get("a", lambda: fetch(True)) is True
    assert cache.get("a", lambda: fetch(False)) is True
    assert len(calls) == 1
    # lifetime 0: not kept.
    cache.get("b", lambda: fetch(False))
    cache.get("b", lambda: fetch(False))
    assert len(calls) == 3
    time.sleep(0.25)
    assert cache.get("a", lambda: fetch(False)) is False
    assert len(calls) == 4


def test_least_recently_used_goes_first() -> None:
    cache: DecisionCache[int] = DecisionCache(lambda value: 60.0, max_entries=2)
    cache.get("a", lambda: 1)
    cache.get("b", lambda: 2)
    cache.get("a", lambda: 0)  # a is now the most recent
    cache.get("c", lambda: 3)
    assert len(cache) == 2
    assert cache.get("a", lambda: 9) == 1
    assert cache.get("b", lambda: 9) == 9


def test_concurrent_callers_share_one_fetch_and_its_error() -> None:
    cache: DecisionCache[bool] = DecisionCache(lambda value: 60.0)
    started = threading.Event()
    release = threading.Event()
    calls = []

    def slow_failure() -> bool:
        calls.append(1)
        started.set()
        release.wait(5)
        raise OSError("service down")

    errors: list[BaseException] = []

    def caller() -> None:
        try:
            cache.get("k", slow_failure)
        except OSError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=caller) for _ in range(8)]
    threads[0].start()
    assert started.wait(5)
    for thread in threads[1:]:
        thread.start()
    time.sleep(0.3)  # the others reach get() and wait on the leader's flight
    release.set()
    for thread in threads:
        thread.join(5)
    assert len(calls) == 1
    assert len(errors) == 8
    # The error was not kept: the next caller asks again.
    assert cache.get("k", lambda: True) is True


def test_an_error_is_raised_to_the_leader() -> None:
    cache: DecisionCache[bool] = DecisionCache(lambda value: 60.0)
    with pytest.raises(ValueError):
        cache.get("k", lambda: (_ for _ in ()).throw(ValueError("x")))
    assert len(cache) == 0
