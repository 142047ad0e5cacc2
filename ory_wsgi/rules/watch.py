"""The rule set in force, swapped atomically when a rule file changes.

`RuleSource.current()` is what the pipeline calls on every request. It
returns the compiled `Matcher` of the last good rule set, or None until one
has loaded (readiness answers 503 then). At most once per `interval`
(1 s) the calling request thread, if no other thread is already at it, stats
the rule files (device, inode, size, mtime in ns). A file whose stamp changed
is read once that stamp has been seen for `settle` seconds (default: the
interval), so that a file caught half-written by an editor (a shorter YAML
list is still valid YAML) is not loaded; a file that changes while it is
read is not used either. That thread then builds and compiles the whole set
and swaps it in with one assignment. No thread is started: this works in
every gunicorn worker, forked before or after the app was built, and a
changed file is in force on every worker 1 to 3 s later, at its next request
(SPEC §16: within 5 s). Writing the new file beside the old one and renaming
it over the old one is still the safest way to change rules.

`validate` is the loader's per-rule hook (the handlers' and the proxy's
upstreams' checks, which also build what a rule needs: see
`ory_wsgi.upstream.router`); `on_swap(rule_set)` runs after each swap, so
that what only the old set used can be let go.

A rule set that fails to load keeps the last good one in force and logs one
line naming the file and the rule. The same broken content is not re-read
until the file changes again. A deleted file counts as a failure (its rules
stay, with the rest of the last good set). `inline://` and `http(s)://`
repositories are read once, when the source is created (Oathkeeper does not
poll remote repositories either); one that failed then is tried again when
a watched file changes. ory.toml's `[[rule]]` tables are part of the
settings and change with a restart.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from ory_wsgi.rules.loader import (
    REMOTE_TIMEOUT,
    Repository,
    RuleError,
    Validate,
    build_rule_set,
    load_repository,
    parse_repository,
)
from ory_wsgi.rules.matcher import Matcher, PatternError
from ory_wsgi.rules.model import AccessRule, RuleSet, Strategy
from ory_wsgi.settings import Settings

log = logging.getLogger("ory_wsgi.rules")

Stamp = tuple[int, int, int, int] | None  # (device, inode, size, mtime_ns); None: missing


def _stamp(path: str) -> Stamp:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


class RuleSource:
    """Holds the compiled rule set in force and reloads it when its files change."""

    def __init__(
        self,
        settings: Settings,
        validate: Validate | None = None,
        interval: float = 1.0,
        settle: float | None = None,
        timeout: float = REMOTE_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
        on_swap: Callable[[RuleSet], None] | None = None,
    ) -> None:
        config = settings.access_rules
        self._inline = settings.rule
        self._strategy: Strategy = config.matching_strategy  # type: ignore[assignment]
        self._default_rule = config.default_rule
        self._validate = validate
        self._on_swap = on_swap
        self._interval = interval
        self._settle = interval if settle is None else settle
        self._timeout = timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._next_check = clock() + interval
        self._matcher: Matcher | None = None
        self.error = ""  # the last load problem, one line; "" after a good load
        self._repositories: list[Repository] = []
        self._rules: dict[int, tuple[AccessRule, ...]] = {}  # per repository, last read
        self._stamps: dict[int, Stamp] = {}  # per file: the stamp of the content last read
        self._seen: dict[int, tuple[Stamp, float]] = {}  # per file: a new stamp, first seen when
        try:
            self._repositories = [parse_repository(loc, os.getcwd()) for loc in config.repositories]
        except RuleError as exc:
            self._fail(str(exc))
            return
        self._load(range(len(self._repositories)), clock())

    @property
    def ready(self) -> bool:
        """True once a valid rule set is in force."""
        return self._matcher is not None

    @property
    def files(self) -> list[str]:
        """The watched files."""
        return [repo.path for repo in self._repositories if repo.kind == "file"]

    def current(self) -> Matcher | None:
        """The matcher in force (None before a good load); checks the files once a `interval`."""
        if self._clock() >= self._next_check:
            self.poll()
        return self._matcher

    def poll(self) -> bool:
        """Reload if a watched file changed; True when a new set was swapped in."""
        if os.getpid() != self._pid:  # a forked worker: the parent's lock state is not ours
            self._pid, self._lock = os.getpid(), threading.Lock()
        if not self._lock.acquire(blocking=False):
            return False  # another thread is checking; use the set in force meanwhile
        try:
            now = self._clock()
            self._next_check = now + self._interval
            settled = []
            for index, repo in enumerate(self._repositories):
                if repo.kind != "file":
                    continue
                stamp = _stamp(repo.path)
                if stamp == self._stamps.get(index):
                    self._seen.pop(index, None)
                    continue
                seen = self._seen.get(index)
                if seen is None or seen[0] != stamp:
                    seen = self._seen[index] = (stamp, now)
                if now - seen[1] >= self._settle:
                    settled.append(index)
            return bool(settled) and self._load(settled, now)
        finally:
            self._lock.release()

    def _load(self, indexes: range | list[int], now: float) -> bool:
        rules = dict(self._rules)
        # A repository that has never been read well is read again with any change.
        missing = [i for i in range(len(self._repositories)) if i not in rules]
        try:
            for index in sorted({*indexes, *missing}):
                repo = self._repositories[index]
                if repo.kind != "file":
                    if index not in rules:  # inline and remote repositories are read once
                        rules[index] = load_repository(repo, self._timeout)
                    continue
                stamp = _stamp(repo.path)
                problem: RuleError | None = None
                try:
                    rules[index] = load_repository(repo, self._timeout)
                except RuleError as exc:
                    problem = exc
                after = _stamp(repo.path)
                if after != stamp:  # written while we read: wait for it to settle
                    self._seen[index] = (after, now)
                    return False
                # This content was read (good or bad): it is not read again until it changes.
                self._stamps[index] = stamp
                self._seen.pop(index, None)
                if problem is not None:
                    raise problem
            groups = [self._inline, *(rules[i] for i in range(len(self._repositories)))]
            rule_set = build_rule_set(
                groups,
                self._strategy,
                self._default_rule,
                [repo.label for repo in self._repositories],
                self._validate,
            )
            matcher = Matcher(rule_set)
        except (RuleError, PatternError) as exc:
            self._fail(str(exc))
            return False
        self._rules = rules
        self._matcher = matcher  # the swap: one assignment, atomic for readers
        self.error = ""
        if self._on_swap is not None:
            self._on_swap(rule_set)
        for rule in rule_set.invalid:
            log.error("access rule fails closed: %s", rule.invalid)
        log.info(
            "access rules loaded: %d rules from %d sources",
            len(rule_set.rules),
            len(self._repositories) + bool(self._inline),
        )
        return True

    def _fail(self, message: str) -> None:
        self.error = message
        if self._matcher is None:
            log.error("access rules not loaded (not ready): %s", message)
        else:
            log.error("access rules not reloaded, the last good set stays: %s", message)
