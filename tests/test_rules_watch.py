"""Rule files are watched: a change is swapped in atomically, a broken one keeps the last set.

Real files in a temporary directory, changed the ways operators change them
(rewritten in place, replaced by rename, deleted).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ory_wsgi.rules.matcher import Matcher
from ory_wsgi.rules.watch import RuleSource
from ory_wsgi.settings import load_settings


def rule(rule_id: str, url: str = "https://x/<.*>") -> dict[str, Any]:
    return {
        "id": rule_id,
        "match": {"url": url, "methods": ["GET"]},
        "authenticators": [{"handler": "anonymous"}],
        "authorizer": {"handler": "allow"},
        "mutators": [{"handler": "noop"}],
    }


def write(path: Path, content: Any) -> None:
    """Write and move the mtime on, as a later edit would (same-tick writes are not a test)."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    later = max(path.stat().st_mtime_ns, before + 1_000_000)
    os.utime(path, ns=(later, later))


def replace(path: Path, content: Any) -> None:
    """Write beside and rename over: how rules should be changed (readers never see half)."""
    beside = path.with_name(path.name + ".new")
    write(beside, content)
    os.replace(beside, path)


def source(tmp_path: Path, **kwargs: Any) -> RuleSource:
    config = tmp_path / "ory.toml"
    config.write_text(
        '[proxy]\nupstream = "http://127.0.0.1:3000"\n'
        '[access_rules]\nrepositories = ["rules.json"]\n'
    )
    kwargs.setdefault("interval", 0.0)
    return RuleSource(load_settings(config, env={}), **kwargs)


def selected(matcher: Matcher | None) -> str | None:
    assert matcher is not None
    result = matcher.match("GET", "https", "x", "/a")
    return None if result is None else result.rule.id


def test_a_changed_file_is_swapped_in(tmp_path: Path) -> None:
    rules = tmp_path / "rules.json"
    write(rules, [rule("one")])
    rule_source = source(tmp_path)
    assert rule_source.ready and rule_source.files == [str(rules)]
    first = rule_source.current()
    assert selected(first) == "one"

    write(rules, [rule("two")])
    second = rule_source.current()
    assert selected(second) == "two"
    assert selected(first) == "one"  # a request holding the old set finishes with it
    assert rule_source.current() is second  # unchanged file: nothing is rebuilt


def test_a_file_replaced_by_rename_is_noticed(tmp_path: Path) -> None:
    rules = tmp_path / "rules.json"
    write(rules, [rule("aaa")])
    rule_source = source(tmp_path)
    replacement = tmp_path / "rules.json.new"
    replacement.write_text(json.dumps([rule("bbb")]))  # same size
    stat = rules.stat()
    os.utime(replacement, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even the same mtime
    os.replace(replacement, rules)
    assert selected(rule_source.current()) == "bbb"


@pytest.mark.parametrize(
    ("broken", "logged"),
    [
        ("[{", "neither JSON nor valid YAML"),
        (json.dumps([rule("bad", "https://x/<[a-z>")]), "rule 'bad': match.url: pattern #2"),
        (json.dumps([rule("dup"), rule("dup")]), "rule 'dup': duplicate id"),
        (json.dumps([{**rule("typo"), "authenticator": []}]), "rule 'typo': unknown field"),
    ],
)
def test_a_broken_file_keeps_the_last_good_set_and_logs_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, broken: str, logged: str
) -> None:
    rules = tmp_path / "rules.json"
    write(rules, [rule("good")])
    rule_source = source(tmp_path)
    caplog.set_level(logging.INFO, logger="ory_wsgi.rules")
    caplog.clear()

    write(rules, broken)
    assert selected(rule_source.current()) == "good"
    assert rule_source.ready
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert str(rules) in errors[0] and logged in errors[0] and "\n" not in errors[0]
    assert "the last good set stays" in errors[0]
    assert logged in rule_source.error

    caplog.clear()
    assert selected(rule_source.current()) == "good"
    assert caplog.records == []  # the same broken content is not reported again

    write(rules, [rule("fixed")])
    assert selected(rule_source.current()) == "fixed"
    assert rule_source.error == ""


def test_not_ready_until_a_valid_set_loads(tmp_path: Path) -> None:
    rules = tmp_path / "rules.json"
    write(rules, "[")
    rule_source = source(tmp_path)
    assert not rule_source.ready
    assert rule_source.current() is None
    assert rule_source.error.startswith(f"{rules}: neither JSON nor valid YAML")
    write(rules, [rule("late")])
    assert selected(rule_source.current()) == "late"
    assert rule_source.ready


def test_a_missing_file_at_start_is_not_ready_and_is_picked_up_later(tmp_path: Path) -> None:
    rule_source = source(tmp_path)
    assert not rule_source.ready and rule_source.error == f"{tmp_path / 'rules.json'}: no such file"
    write(tmp_path / "rules.json", [rule("created")])
    assert selected(rule_source.current()) == "created"


def test_a_deleted_file_keeps_the_last_good_set(tmp_path: Path) -> None:
    rules = tmp_path / "rules.json"
    write(rules, [rule("kept")])
    rule_source = source(tmp_path)
    rules.unlink()
    assert selected(rule_source.current()) == "kept"
    assert rule_source.error == f"{rules}: no such file"


def test_files_are_checked_once_an_interval_and_loaded_once_settled(tmp_path: Path) -> None:
    now = [100.0]
    rules = tmp_path / "rules.json"
    write(rules, [rule("one")])
    rule_source = source(tmp_path, interval=1.0, clock=lambda: now[0])
    write(rules, [rule("two")])
    now[0] += 0.5
    assert selected(rule_source.current()) == "one"  # not checked yet
    now[0] += 0.5
    assert selected(rule_source.current()) == "one"  # checked: changed, but not yet settled
    now[0] += 0.9
    assert selected(rule_source.current()) == "one"  # not checked again yet
    now[0] += 0.1
    assert selected(rule_source.current()) == "two"  # unchanged for a second: in force


def test_a_half_written_file_is_not_loaded(tmp_path: Path) -> None:
    """An editor's write seen midway can be valid (a shorter YAML list): wait until it settles."""
    now = [100.0]
    rules = tmp_path / "rules.yaml"
    whole = "- id: one\n  match: {url: 'https://x/<.*>', methods: [GET]}\n"
    whole += "  authenticators: [{handler: anonymous}]\n  authorizer: {handler: allow}\n"
    whole += "  mutators: [{handler: noop}]\n"
    rules.write_text(whole)
    config = tmp_path / "ory.toml"
    config.write_text(
        '[proxy]\nupstream = "http://127.0.0.1:3000"\n'
        '[access_rules]\nrepositories = ["rules.yaml"]\n'
    )
    rule_source = RuleSource(load_settings(config, env={}), clock=lambda: now[0])
    assert selected(rule_source.current()) == "one"
    two = whole.replace("id: one", "id: two").replace("/<.*>", "/b")
    write(rules, whole.replace("id: one", "id: two"))  # the first half of the new content
    now[0] += 1.0
    assert selected(rule_source.current()) == "one"  # seen once: not yet settled
    write(rules, whole.replace("id: one", "id: two") + two.replace("id: two", "id: three"))
    now[0] += 1.0
    assert selected(rule_source.current()) == "one"  # changed again: waits again
    now[0] += 1.0
    matcher = rule_source.current()
    assert matcher is not None and [r.id for r in matcher.rule_set.rules] == ["two", "three"]


def test_request_threads_always_see_a_whole_rule_set(tmp_path: Path) -> None:
    rules = tmp_path / "rules.json"
    write(rules, [rule("v0")])
    rule_source = source(tmp_path)
    seen: set[str | None] = set()
    failures: list[BaseException] = []
    stop = threading.Event()

    def request_loop() -> None:
        try:
            while not stop.is_set():
                seen.add(selected(rule_source.current()))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=request_loop) for _ in range(4)]
    for thread in threads:
        thread.start()
    for version in range(1, 6):
        replace(rules, [rule(f"v{version}")])
        rule_source.poll()
    stop.set()
    for thread in threads:
        thread.join(timeout=10)
    assert failures == []
    assert seen <= {f"v{i}" for i in range(6)}
    assert selected(rule_source.current()) == "v5"


def _worker(rule_source: RuleSource, results: Any) -> None:
    """A forked worker: serve 'requests' until the new rule set is in force."""
    deadline = time.monotonic() + 10
    first = selected(rule_source.current())
    while time.monotonic() < deadline:
        now = selected(rule_source.current())
        if now != first:
            results.put((os.getpid(), first, now))
            return
        time.sleep(0.05)
    results.put((os.getpid(), first, "timed out"))


def test_every_forked_worker_swaps_in_a_change_within_seconds(tmp_path: Path) -> None:
    """As gunicorn forks workers from a master that built the app: no thread, no restart."""
    rules = tmp_path / "rules.json"
    write(rules, [rule("before")])
    rule_source = source(tmp_path, interval=0.2)
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    workers = [context.Process(target=_worker, args=(rule_source, results)) for _ in range(2)]
    for worker in workers:
        worker.start()
    time.sleep(0.3)
    replace(rules, [rule("after")])
    changed = time.monotonic()
    seen = [results.get(timeout=15) for _ in workers]
    elapsed = time.monotonic() - changed
    for worker in workers:
        worker.join(timeout=5)
    assert sorted(first_then for _pid, *first_then in seen) == [["before", "after"]] * 2
    assert len({pid for pid, *_ in seen}) == 2
    assert elapsed < 5  # SPEC §16


def test_a_file_broken_from_the_start_is_read_again_with_any_change(tmp_path: Path) -> None:
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    write(first, "[")
    write(second, [rule("second", "https://x/second")])
    config = tmp_path / "ory.toml"
    config.write_text(
        '[proxy]\nupstream = "http://127.0.0.1:3000"\n'
        '[access_rules]\nrepositories = ["first.json", "second.json"]\n'
    )
    rule_source = RuleSource(load_settings(config, env={}), interval=0.0)
    assert not rule_source.ready and rule_source.error.startswith(str(first))
    write(second, [rule("second", "https://x/2")])
    assert rule_source.current() is None  # the other file changed; the first is still broken
    assert rule_source.error.startswith(str(first))
    write(first, [rule("first")])
    matcher = rule_source.current()
    assert matcher is not None
    assert [r.id for r in matcher.rule_set.rules] == ["first", "second"]
