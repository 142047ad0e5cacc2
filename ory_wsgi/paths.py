"""One normalised path per request, and the `[[protect]]` / `[[public]]` rules that match it.

The same normalised path is used for matching and sent upstream, so that the
application can never see a path other than the one that was checked.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote

from ory_wsgi.errors import BadRequest
from ory_wsgi.settings import Rule

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_ESCAPE_RE = re.compile(r"%([0-9A-Fa-f]{2})")
# Spellings some servers or frameworks turn into a separator, a fragment or an
# end of string behind our back: refused where they could hide a protected path.
_SUSPICIOUS_RE = re.compile(r"%(?:2[Ff]|5[Cc]|00|23|25)|\\|\x00")
_HIGH_ESCAPE_RE = re.compile(r"%[89A-Fa-f][0-9A-Fa-f]")


@dataclass(frozen=True)
class NormalisedPath:
    """`path` is forwarded (`;params` kept); `match` is what the rules see."""

    path: str
    match: str
    suspicious: bool


def normalise_path(raw: str) -> NormalisedPath:
    """Decode unreserved escapes, resolve dot segments, collapse repeated slashes.

    `raw` is the path as the client sent it (percent-encoded, no query).
    Reserved escapes such as `%2F` stay encoded (uppercased) in `path`.
    Raises BadRequest for a path that does not start with `/`.
    """
    if not raw.startswith("/"):
        raise BadRequest("the request path must start with '/'")
    suspicious = bool(_SUSPICIOUS_RE.search(raw))
    if _HIGH_ESCAPE_RE.search(raw) and not _valid_utf8(raw):
        suspicious = True
    decoded = _ESCAPE_RE.sub(_decode_unreserved, raw)
    path = _resolve(decoded)
    # Match on the path as the application will read it: every escape decoded.
    match = _match_form(_resolve(unquote(path, errors="replace")))
    return NormalisedPath(path=path, match=match, suspicious=suspicious)


def lenient_match_paths(raw: str) -> tuple[str, ...]:
    """The path as lenient applications could read it: every escape decoded
    (thrice over, for double encoding), `\\` as `/`, with NUL and `#` read as
    an end or as a plain character, with dot segments resolved and without.
    Used to decide whether a suspicious path comes near a protected area."""
    views: dict[str, None] = {}
    text = raw
    for _ in range(3):
        text = _ESCAPE_RE.sub(_decode_any, text)
        slashed = text.replace("\\", "/")
        for variant in (slashed, slashed.split("\x00", 1)[0].split("#", 1)[0]):
            variant = "/" + variant.lstrip("/")
            views[_match_form(_resolve(variant))] = None
            views[_match_form(variant)] = None
    return tuple(views)


def _decode_unreserved(match: re.Match[str]) -> str:
    value = int(match.group(1), 16)
    if value in _UNRESERVED:
        return chr(value)
    return "%" + match.group(1).upper()


def _valid_utf8(raw: str) -> bool:
    try:
        _ESCAPE_RE.sub(_decode_any, raw).encode("latin-1").decode("utf-8")
    except UnicodeError:
        return False
    return True


def _decode_any(match: re.Match[str]) -> str:
    return chr(int(match.group(1), 16))


def _resolve(path: str) -> str:
    """RFC 3986 remove_dot_segments, with empty segments dropped (`//` -> `/`)."""
    output: list[str] = []
    segments = path.split("/")[1:]
    for index, segment in enumerate(segments):
        bare = segment.split(";", 1)[0]
        last = index == len(segments) - 1
        if bare == ".":
            if last:
                output.append("")
            continue
        if bare == "..":
            if output:
                output.pop()
            if last:
                output.append("")
            continue
        if segment == "" and not last:
            continue
        output.append(segment)
    return "/" + "/".join(output)


def _match_form(path: str) -> str:
    """`;params` dropped, trailing dots and spaces trimmed, lower case: the
    spellings that servers and frameworks treat as the same resource."""
    segments = []
    for segment in path.split("/"):
        bare = segment.split(";", 1)[0]
        trimmed = bare.rstrip(". ") if bare not in (".", "..") else bare
        if trimmed and trimmed != ".":
            segments.append(trimmed)
    trailing = "/" if path.endswith("/") and segments else ""
    return ("/" + "/".join(segments) + trailing).lower()


@dataclass(frozen=True)
class CompiledRule:
    rule: Rule
    protect: bool
    pattern: re.Pattern[str]
    specificity: int

    def applies(self, path: str, method: str) -> bool:
        if self.rule.methods and method not in self.rule.methods:
            return False
        return self.pattern.match(path) is not None


def compile_rule(rule: Rule, protect: bool) -> CompiledRule:
    if rule.prefix:
        prefix = _resolve(rule.prefix).rstrip("/")
        pattern = re.escape(_match_form(prefix)) + r"(?:/.*)?\Z" if prefix else r"/.*\Z"
        specificity = len(prefix)
    elif rule.glob:
        pattern = _glob_pattern(_match_form(rule.glob))
        specificity = len(rule.glob.replace("*", "").replace("?", ""))
    else:
        pattern = rule.regex
        specificity = len(re.sub(r"[\\^$.*+?()\[\]{}|]", "", rule.regex))
    return CompiledRule(rule, protect, re.compile(pattern, re.IGNORECASE | re.DOTALL), specificity)


def _glob_pattern(glob: str) -> str:
    """`*` within a segment, `**` across segments; `/x/**` also covers `/x`."""
    out = []
    index = 0
    while index < len(glob):
        if glob.startswith("/**", index) and index + 3 == len(glob):
            out.append(r"(?:/.*)?")
            index += 3
        elif glob.startswith("**", index):
            out.append(".*")
            index += 2
        elif glob[index] == "*":
            out.append("[^/]*")
            index += 1
        elif glob[index] == "?":
            out.append("[^/]")
            index += 1
        else:
            out.append(re.escape(glob[index]))
            index += 1
    return "".join(out) + r"\Z"


class PathRules:
    """All rules; `find(path, method)` is the most specific rule that applies.

    Ties go to `[[protect]]`: when in doubt, a session is required.
    """

    def __init__(self, protect: Iterable[Rule], public: Iterable[Rule]) -> None:
        rules = [compile_rule(rule, True) for rule in protect]
        rules += [compile_rule(rule, False) for rule in public]
        # Most specific first; protect before public at equal specificity.
        self.rules = sorted(rules, key=lambda r: (-r.specificity, not r.protect))

    def __bool__(self) -> bool:
        return bool(self.rules)

    def find(self, match_path: str, method: str) -> CompiledRule | None:
        for rule in self.rules:
            if rule.applies(match_path, method):
                return rule
        return None

    def protected(self, match_path: str, method: str) -> CompiledRule | None:
        """The protect rule that governs this path, or None if it is open."""
        rule = self.find(match_path, method)
        return rule if rule is not None and rule.protect else None

    def near_protected(self, *match_paths: str) -> bool:
        """Whether any protect rule covers one of these paths, whatever the method or exceptions."""
        return any(
            rule.protect and rule.pattern.match(path)
            for rule in self.rules
            for path in match_paths
        )
