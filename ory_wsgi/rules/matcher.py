"""One compiled matcher over a rule set: which access rule a request is for.

The match input is what Oathkeeper matches: `scheme://host/path`, the query
dropped. The caller passes the path already normalised (SPEC §9). The
matcher puts the scheme and host in one canonical form, because a request
that misses the rule meant for it would fall to a broader or the default
rule: both lower-cased (`Host: API.example.com` is `api.example.com`), the
scheme's default port and a trailing dot dropped. It refuses (BadRequest, an
answer of 400) a scheme other than http(s), a host with characters no host
name has (`app.example.com/public` would fake a path) and a path that does
not start with `/`. Literal scheme and host text in rules is put in the same
form at load.

Patterns sit inside `<...>` (nested `<>` count, as in Oathkeeper; unbalanced
delimiters are a load error). Text outside them is literal. They are read in
the rule set's strategy, or in the rule's own `match.strategy` (ours).
- `regexp`: each `<...>` is a Python regular expression, wrapped in a
  capturing group; the whole URL must match (`fullmatch`). `.` matches a
  line break too (a decoded `%0A` must not slip past `<.*>`). .NET-style named
  groups `(?<name>...)` are accepted (Oathkeeper uses regexp2) and become
  Python's `(?P<name>...)`; flags opening a pattern (`<(?i)admin>`) apply to
  that pattern. `capture_groups` are every group's text in
  regexp2's order: unnamed groups left to right, then named ones; a group
  that did not take part is "".
- `glob`: gobwas/glob syntax with `.` and `/` as separators: `*` is any run
  of characters within one host label or path segment, `**` any run at all,
  `?` one non-separator character, `[abc]`, `[!abc]`, `[a-z]`, `[!a-z]`,
  `{a,b}` and `\\` escapes. No capture groups (as Oathkeeper).

Finding candidates is not a scan of every rule: the rules of each method sit
in a radix tree keyed by their literal prefix (the text before the first
`<`), so a request only tests the rules whose prefix its URL starts with,
best first; the first full match wins.

Which rule wins when several match (Oathkeeper answers 500; SPEC §16):
1. the higher `priority` (default 0);
2. the longer literal prefix (characters before the first `<`);
3. the more literal characters in the whole `match.url`;
4. a true tie goes to the rule loaded first (`[[rule]]` tables, then the
   repositories in the listed order, each file top to bottom). `ties()`
   lists such pairs statically for `ory-wsgi rules check`.
When no rule matches, the rule named by `[access_rules] default_rule`
applies (it may omit `match`); without one, `match` returns None and the
caller answers 404.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, NamedTuple

from ory_wsgi.errors import BadRequest
from ory_wsgi.rules.model import AccessRule, RuleSet, Strategy

# `(?<name>` but not the look-behinds `(?<=` and `(?<!`.
_DOTNET_GROUP = re.compile(r"\(\?<(?![=!])")
# A pattern opening with flags, `<(?i)admin>`: Go applies them to the rest of that
# pattern; Python only allows them at the start of the whole URL, so they are scoped.
_LEADING_FLAGS = re.compile(r"\(\?([imsx]+)\)(.*)", re.DOTALL)
_SEGMENT_ANY = "[^./]*"
_SEGMENT_ONE = "[^./]"
_DEFAULT_PORTS = {"http": ":80", "https": ":443"}
_ORIGINS_KEPT = 256
# What a Host can hold once lower-cased: a name or IPv4 (a trailing dot allowed), or an
# [IPv6] address, then a port. Never `/`, `@`, `?`, `#`, a backslash or a space: they would
# fake a path.
_HOST = re.compile(
    r"(?P<name>[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\.?|\[[0-9a-f:.]+\])(?P<port>:[0-9]{1,5})?"
)
# A literal rule origin that names its scheme's default port.
_RULE_DEFAULT_PORT = re.compile(r"(https?)://([^/:]*)(:80|:443)(?=/|$)")


class PatternError(ValueError):
    """`match.url` cannot be compiled; the message says why, in one line."""


@dataclass(frozen=True, slots=True)
class CompiledURL:
    """A `match.url` ready to test: its regex, literal prefix and specificity."""

    regex: re.Pattern[str]
    prefix: str  # literal text before the first `<`, authority lower-cased
    literal_length: int  # literal characters in the whole URL
    group_order: tuple[int, ...]  # regexp2's order of the capture groups


class MatchResult(NamedTuple):
    """The rule a request is for, and what its `<...>` regexps captured.

    A NamedTuple, not a frozen dataclass: one is built per matched request,
    and a frozen dataclass's `__init__` costs several times more.
    """

    rule: AccessRule
    capture_groups: tuple[str, ...] = ()
    default: bool = False  # no rule matched; this is `[access_rules] default_rule`


@dataclass(frozen=True, slots=True)
class Verdict:
    """Why one rule did or did not decide a request (for `ory-wsgi rules explain`)."""

    rule: AccessRule
    outcome: Literal["selected", "default", "shadowed", "no match", "not applicable"]
    reason: str


@dataclass(frozen=True, slots=True)
class Explanation:
    selected: MatchResult | None
    url: str  # what was matched: scheme://host/path
    verdicts: tuple[Verdict, ...]  # every rule, in load order


def request_url(scheme: str, host: str, path: str) -> str:
    """`scheme://host/path` in the form rules are matched in; BadRequest if it has none."""
    if not path.startswith("/"):
        raise BadRequest(f"not a path: {path[:100]!r}")
    return request_origin(scheme, host) + path


def request_origin(scheme: str, host: str) -> str:
    """`scheme://host[:port]`: lower case, no default port, no trailing dot; or BadRequest."""
    scheme, host = scheme.lower(), host.lower()
    default_port = _DEFAULT_PORTS.get(scheme)
    if default_port is None:
        raise BadRequest(f"not an http(s) request: {scheme[:20]!r}")
    found = _HOST.fullmatch(host)
    if found is None:
        raise BadRequest(f"not a host: {host[:100]!r}")
    port = found.group("port") or ""
    if port == default_port:
        port = ""
    return f"{scheme}://{found.group('name').rstrip('.')}{port}"


def split_template(template: str) -> list[tuple[bool, str]]:
    """`(is_pattern, text)` pieces of a `match.url`; `<` and `>` nest as in Oathkeeper."""
    pieces: list[tuple[bool, str]] = []
    level, start, end = 0, 0, 0
    for index, char in enumerate(template):
        if char == "<":
            level += 1
            if level == 1:
                start = index
        elif char == ">":
            level -= 1
            if level == 0:
                if start > end:
                    pieces.append((False, template[end:start]))
                pieces.append((True, template[start + 1 : index]))
                end = index + 1
            elif level < 0:
                raise PatternError(f"unbalanced '>' at character {index + 1}")
    if level != 0:
        raise PatternError("unbalanced '<': a pattern is not closed with '>'")
    if end < len(template):
        pieces.append((False, template[end:]))
    return pieces


def _lower_authority(pieces: list[tuple[bool, str]]) -> list[tuple[bool, str]]:
    """Lower-case the literal scheme and host text (up to the first `/` after `://`)."""
    out = list(pieces)
    first = next((i for i, (pat, text) in enumerate(pieces) if not pat and "://" in text), None)
    if first is None:
        return out  # no literal `scheme://`: nothing is known to be the host
    for index in range(first):
        if not out[index][0]:
            out[index] = (False, out[index][1].lower())
    skip = pieces[first][1].index("://") + 3
    for index in range(first, len(out)):
        is_pattern, text = out[index]
        if is_pattern:
            continue
        slash = text.find("/", skip)
        skip = 0
        if slash >= 0:
            out[index] = (False, text[:slash].lower() + text[slash:])
            break
        out[index] = (False, text.lower())
    return out


def glob_to_regex(pattern: str) -> str:
    """gobwas/glob syntax, separators `.` and `/`, as a Python regex (no groups)."""
    out: list[str] = []
    depth, index, length = 0, 0, len(pattern)
    while index < length:
        char = pattern[index]
        index += 1
        if char == "\\":
            if index < length:  # a trailing backslash escapes nothing (gobwas drops it)
                out.append(re.escape(pattern[index]))
                index += 1
        elif char == "*":
            if index < length and pattern[index] == "*":
                out.append(".*")
                index += 1
            else:
                out.append(_SEGMENT_ANY)
        elif char == "?":
            out.append(_SEGMENT_ONE)
        elif char == "[":
            klass, index = _glob_class(pattern, index)
            out.append(klass)
        elif char == "{":
            depth += 1
            out.append("(?:")
        elif char == "," and depth:
            out.append("|")
        elif char == "}" and depth:
            depth -= 1
            out.append(")")
        else:
            out.append(re.escape(char))
    if depth:
        raise PatternError("glob: '{' is not closed with '}'")
    return "".join(out)


def _glob_class(pattern: str, index: int) -> tuple[str, int]:
    """`[...]` after the `[`: one range `a-z` or a list of characters, `!` negates."""
    negate = index < len(pattern) and pattern[index] == "!"
    index += negate
    if index + 2 < len(pattern) and pattern[index + 1] == "-" and pattern[index] != "]":
        low, high = pattern[index], pattern[index + 2]
        index += 3
        if index >= len(pattern) or pattern[index] != "]":
            raise PatternError("glob: a range [a-z] must close right after its upper bound")
        if low > high:
            raise PatternError(f"glob: range [{low}-{high}] is backwards")
        body = f"{re.escape(low)}-{re.escape(high)}"
        index += 1
    else:
        chars: list[str] = []
        while index < len(pattern) and pattern[index] != "]":
            if pattern[index] == "\\" and index + 1 < len(pattern):
                index += 1
            chars.append(pattern[index])
            index += 1
        if index >= len(pattern):
            raise PatternError("glob: '[' is not closed with ']'")
        if not chars:
            raise PatternError("glob: empty character class []")
        body = "".join("\\" + c if c in "\\]^-[" else c for c in chars)
        index += 1
    return f"[{'^' if negate else ''}{body}]", index


def compile_url(template: str, strategy: Strategy) -> CompiledURL:
    """Compile one `match.url`; raises PatternError with a one-line reason."""
    pieces = _lower_authority(split_template(template))
    if pieces and not pieces[0][0]:
        found = _RULE_DEFAULT_PORT.match(pieces[0][1])
        if found and _DEFAULT_PORTS[found.group(1)] == found.group(3):
            pieces[0] = (False, pieces[0][1][: found.start(3)] + pieces[0][1][found.end(3) :])
    parts: list[str] = ["(?s)"]  # `.` and glob's `**` match a decoded line break too
    prefix_done, prefix, literal_length = False, [], 0
    for number, (is_pattern, text) in enumerate(pieces, 1):
        if not is_pattern:
            parts.append(re.escape(text))
            literal_length += len(text)
            if not prefix_done:
                prefix.append(text)
            continue
        prefix_done = True
        if strategy == "glob":
            parts.append(f"(?:{glob_to_regex(text)})")
            continue
        text = _DOTNET_GROUP.sub("(?P<", text)
        if flags := _LEADING_FLAGS.fullmatch(text):
            text = f"(?{flags.group(1)}:{flags.group(2)})"
        try:
            re.compile(text)
        except (re.error, OverflowError, RecursionError) as exc:
            raise PatternError(f"pattern #{number} <{text}> is not a valid regex: {exc}") from None
        parts.append(f"({text})")
    try:
        regex = re.compile("".join(parts))
    except (re.error, OverflowError, RecursionError) as exc:
        raise PatternError(f"not a valid pattern: {exc}") from None
    named = sorted(regex.groupindex.values())
    order = tuple(i for i in range(1, regex.groups + 1) if i not in named) + tuple(named)
    if strategy == "glob":
        order = ()
    return CompiledURL(regex, "".join(prefix), literal_length, order)


@dataclass(frozen=True, slots=True)
class _Entry:
    rule: AccessRule
    url: CompiledURL
    rank: tuple[int, int, int, int]  # sorts best first
    plain: MatchResult  # the result when there is nothing to capture (built once)
    in_order: bool  # no named groups: regexp2's order is Python's

    def result(self, found: re.Match[str]) -> MatchResult:
        if not self.url.group_order:
            return self.plain
        if self.in_order:
            return MatchResult(self.rule, found.groups(""))
        return MatchResult(self.rule, tuple(found.group(i) or "" for i in self.url.group_order))


class _Node:
    """A radix-tree node: edges keyed by their first character."""

    __slots__ = ("candidates", "children", "entries")

    def __init__(self) -> None:
        self.children: dict[str, tuple[str, _Node]] = {}
        self.entries: list[_Entry] = []
        self.candidates: tuple[_Entry, ...] = ()

    def insert(self, key: str, entry: _Entry) -> None:
        node = self
        while key:
            edge = node.children.get(key[0])
            if edge is None:
                child = _Node()
                node.children[key[0]] = (key, child)
                node = child
                break
            label, child = edge
            common = _common_length(label, key)
            if common < len(label):  # split the edge where the keys part
                middle = _Node()
                middle.children[label[common]] = (label[common:], child)
                node.children[key[0]] = (label[:common], middle)
                child = middle
            node, key = child, key[common:]
        node.entries.append(entry)

    def finish(self, inherited: tuple[_Entry, ...] = ()) -> None:
        """Give each node every entry on its path from the root, best first."""
        self.candidates = tuple(sorted((*inherited, *self.entries), key=lambda e: e.rank))
        for _label, child in self.children.values():
            child.finish(self.candidates)

    def walk(self, url: str) -> tuple[_Entry, ...]:
        """The candidates of the deepest node whose whole path `url` starts with."""
        node, position, length = self, 0, len(url)
        while position < length:
            edge = node.children.get(url[position])
            if edge is None or not url.startswith(edge[0], position):
                break
            node = edge[1]
            position += len(edge[0])
        return node.candidates


def _common_length(a: str, b: str) -> int:
    length = min(len(a), len(b))
    for index in range(length):
        if a[index] != b[index]:
            return index
    return length


class Matcher:
    """The compiled form of a `RuleSet`; thread-safe, read-only after `__init__`.

    Raises PatternError (message starting with the rule's source and id) when
    a `match.url` does not compile.
    """

    def __init__(self, rule_set: RuleSet) -> None:
        self.rule_set = rule_set
        self._entries: list[_Entry] = []
        # (scheme, Host) as received -> canonical origin; a few hosts serve nearly all requests
        self._origins: dict[tuple[str, str], str] = {}
        self._trees: dict[str, _Node] = {}
        for order, rule in enumerate(rule_set.rules):
            if rule.match is None:
                continue
            try:
                url = compile_url(rule.match.url, rule.match.strategy or rule_set.strategy)
            except PatternError as exc:
                raise PatternError(f"{rule.where}: match.url: {exc}") from None
            rank = (-rule.priority, -len(url.prefix), -url.literal_length, order)
            in_order = not url.regex.groupindex
            entry = _Entry(rule, url, rank, MatchResult(rule), in_order)
            self._entries.append(entry)
            for method in rule.match.methods:
                self._trees.setdefault(method, _Node()).insert(url.prefix, entry)
        for tree in self._trees.values():
            tree.finish()
        default = rule_set.get(rule_set.default_rule) if rule_set.default_rule else None
        self._default = MatchResult(default, (), True) if default else None

    def candidates(self, method: str, scheme: str, host: str, path: str) -> tuple[AccessRule, ...]:
        """The rules `match` would test for this request, best first (for tests and tools)."""
        tree = self._trees.get(method.upper())
        if tree is None:
            return ()
        return tuple(e.rule for e in tree.walk(request_url(scheme, host, path)))

    def match(self, method: str, scheme: str, host: str, path: str) -> MatchResult | None:
        """The rule for this request, the default rule, or None (the caller answers 404).

        Raises BadRequest for a scheme, host or path that cannot be matched (see above).
        """
        if not path.startswith("/"):
            raise BadRequest(f"not a path: {path[:100]!r}")
        origin = self._origins.get((scheme, host))
        if origin is None:
            origin = request_origin(scheme, host)
            if len(self._origins) >= _ORIGINS_KEPT:  # many hosts: start over, stay bounded
                self._origins.clear()
            self._origins[(scheme, host)] = origin
        url = origin + path
        tree = self._trees.get(method) or self._trees.get(method.upper())
        if tree is not None:
            for entry in tree.walk(url):
                found = entry.url.regex.fullmatch(url)
                if found is not None:
                    return entry.result(found)
        return self._default

    def ties(self) -> list[tuple[AccessRule, AccessRule]]:
        """Pairs of rules that can match one request and rank equal (the first one wins).

        Equal rank with a shared method means an equal literal prefix, so the
        same requests reach both; whether their patterns overlap is not decided.
        """
        seen: dict[tuple[str, str, int, int], AccessRule] = {}
        pairs: list[tuple[AccessRule, AccessRule]] = []
        for entry in self._entries:
            assert entry.rule.match is not None  # only rules with a match are entries
            for method in entry.rule.match.methods:
                key = (method, entry.url.prefix, entry.rule.priority, entry.url.literal_length)
                first = seen.setdefault(key, entry.rule)
                if first is not entry.rule and (first, entry.rule) not in pairs:
                    pairs.append((first, entry.rule))
        return pairs

    def explain(self, method: str, scheme: str, host: str, path: str) -> Explanation:
        """Every rule with why it did or did not decide this request (not for the hot path)."""
        method = method.upper()
        url = request_url(scheme, host, path)
        origin = url[: url.index("/", url.index("://") + 3)]
        matching: list[tuple[_Entry, re.Match[str]]] = []
        misses: dict[int, str] = {}
        for entry in self._entries:
            match = entry.rule.match
            assert match is not None
            if not match.methods:
                misses[id(entry.rule)] = "has no methods, so it matches no request"
            elif method not in match.methods:
                misses[id(entry.rule)] = f"method {method} is not one of {', '.join(match.methods)}"
            elif (found := entry.url.regex.fullmatch(url)) is None:
                misses[id(entry.rule)] = _url_miss(entry.url, url, origin, match.url)
            else:
                matching.append((entry, found))
        matching.sort(key=lambda pair: pair[0].rank)
        selected: MatchResult | None = None
        if matching:
            best, found = matching[0]
            selected = best.result(found)
        elif self._default is not None:
            selected = self._default
        verdicts = []
        by_rule = {id(entry.rule): entry for entry, _found in matching}
        for rule in self.rule_set.rules:
            if selected is not None and rule is selected.rule:
                if selected.default:
                    verdicts.append(Verdict(rule, "default", "no rule matched: the default rule"))
                else:
                    reason = f"matches; {_describe(by_rule[id(rule)])}"
                    if rule.invalid:
                        reason += "; the rule is invalid, so the request fails closed"
                    verdicts.append(Verdict(rule, "selected", reason))
            elif id(rule) in by_rule:
                reason = _shadowed(by_rule[id(rule)], matching[0][0])
                verdicts.append(Verdict(rule, "shadowed", reason))
            elif id(rule) in misses:
                verdicts.append(Verdict(rule, "no match", misses[id(rule)]))
            else:
                verdicts.append(Verdict(rule, "not applicable", "has no match (default rule only)"))
        return Explanation(selected, url, tuple(verdicts))


def _describe(entry: _Entry) -> str:
    return (
        f"priority {entry.rule.priority}, literal prefix {len(entry.url.prefix)} characters, "
        f"{entry.url.literal_length} literal characters"
    )


def _shadowed(entry: _Entry, winner: _Entry) -> str:
    lead = f"matches, but rule {winner.rule.id!r} wins"
    if winner.rule.priority != entry.rule.priority:
        return f"{lead}: higher priority ({winner.rule.priority} > {entry.rule.priority})"
    if len(winner.url.prefix) != len(entry.url.prefix):
        return (
            f"{lead}: longer literal prefix "
            f"({len(winner.url.prefix)} > {len(entry.url.prefix)} characters)"
        )
    if winner.url.literal_length != entry.url.literal_length:
        return (
            f"{lead}: more literal characters "
            f"({winner.url.literal_length} > {entry.url.literal_length})"
        )
    return f"{lead}: a tie in priority and specificity, and it was loaded first"


def _url_miss(url: CompiledURL, request: str, origin: str, template: str) -> str:
    prefix = url.prefix
    if "://" in prefix:
        authority_end = prefix.find("/", prefix.index("://") + 3)
        rule_origin = prefix if authority_end < 0 else prefix[:authority_end]
        if authority_end >= 0 and rule_origin != origin:
            return f"scheme/host: the rule is for {rule_origin}, the request for {origin}"
        if authority_end >= 0:
            path_template = template[template.index("/", template.index("://") + 3) :]
            return f"path: {request[len(origin) :]!r} does not match {path_template!r}"
        if not origin.startswith(rule_origin) and not rule_origin.startswith(origin):
            return f"scheme/host: the rule is for {rule_origin}..., the request for {origin}"
    return f"URL {request!r} does not match {template!r}"
