"""One normalised path per request, and the `[[protect]]` / `[[public]]` rules that match it.

The same normalised path is used for matching and sent upstream, so that the
application can never see a path other than the one that was checked.
In-process (`environ[EMBEDDED_KEY]`) the application routes on the path after
its mount point: `app_relative_path` is what the rules judge there, and
`wsgi_path` of it is the `PATH_INFO` the application gets.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote, unquote_to_bytes

from ory_wsgi.errors import BadRequest
from ory_wsgi.settings import Rule

# Set in environ by the embedded middleware: the app routes on the path after SCRIPT_NAME.
EMBEDDED_KEY = "ory.embedded"
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_ESCAPE_RE = re.compile(r"%([0-9A-Fa-f]{2})")
# Spellings some servers or frameworks turn into a separator, a fragment or an
# end of string behind our back: refused where they could hide a protected path.
# Encoded C0 controls and DEL among them: Python's `re` `$` matches before a final
# newline, so routers using it serve `/members%0A` as `/members`.
_SUSPICIOUS_RE = re.compile(
    r"%(?:2[Ff]|5[Cc]|[01][0-9A-Fa-f]|7[Ff]|23|25|[Uu][0-9A-Fa-f]{4})|\\|[\x00-\x1f\x7f]"
)
# IIS's non-standard `%uXXXX` escapes.
_WIDE_ESCAPE_RE = re.compile(r"%[Uu]([0-9A-Fa-f]{4})")
_HIGH_ESCAPE_RE = re.compile(r"%[89A-Fa-f][0-9A-Fa-f]")
# What lenient readers drop from the end of a segment: whitespace (Unicode's too,
# as `str.strip` sees it), C0 controls and DEL; then also dots, as Windows does.
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_TRAILING_BLANK = re.compile(r"[\s\x00-\x1f\x7f]+\Z")
_TRAILING_BLANK_OR_DOT = re.compile(r"[\s\x00-\x1f\x7f.]+\Z")
# Overlong UTF-8 for '/', '.' and '\' (as latin-1 text): old decoders read them as such.
_OVERLONG = (
    ("\xc0\xaf", "/"),
    ("\xe0\x80\xaf", "/"),
    ("\xc0\xae", "."),
    ("\xe0\x80\xae", "."),
    ("\xc1\x9c", "\\"),
)


@dataclass(frozen=True)
class NormalisedPath:
    """`path` is forwarded (`;params` kept); `views` are the readings the rules see.

    `views[0]` (also `match`) is the canonical reading: decoded, dot segments
    resolved, `;params` and trailing dots dropped. The others are how less
    lenient applications read `path`: with params, without resolving.
    """

    path: str
    views: tuple[str, ...]
    suspicious: bool

    @property
    def match(self) -> str:
        return self.views[0]


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
    path = _reading(decoded, lenient=False, resolve=True)
    # Rules look at the path as the application will read it: every escape decoded.
    return NormalisedPath(
        path=path, views=_views(unquote(path, errors="replace")), suspicious=suspicious
    )


def readings(decoded: str) -> tuple[str, ...]:
    """Every reading the rules consider of an already decoded path (see `NormalisedPath`)."""
    return _views(decoded)


def _views(decoded: str) -> tuple[str, ...]:
    """Readings of a decoded path, lenient and resolved first, duplicates dropped."""
    # Some routers decode the path and then cut it at a `?` it spelled.
    texts = (decoded, decoded.split("?", 1)[0]) if "?" in decoded else (decoded,)
    readings = dict.fromkeys(
        _reading(text, lenient=lenient, resolve=resolve)
        for text in texts
        for resolve in (True, False)
        for lenient in (True, False)
    )
    return tuple(readings)


def lenient_match_paths(raw: str) -> tuple[str, ...]:
    """The path as lenient applications could read it: every escape decoded
    (thrice over, for double encoding; IIS's `%uXXXX` too), overlong UTF-8 and `\\` as what they
    spell, with NUL and `#` read as an end or as a plain character, controls
    dropped or kept (trailing ones trimmed, as `re`'s `$` reads them), with dot
    segments resolved and without. Used to decide whether a suspicious path
    comes near a protected area."""
    views: dict[str, None] = {}
    text = raw
    for _ in range(3):
        text = _WIDE_ESCAPE_RE.sub(_decode_any, text)
        text = _ESCAPE_RE.sub(_decode_any, text)
        spelled = text
        for overlong, plain in _OVERLONG:
            spelled = spelled.replace(overlong, plain)
        for slashed in {text.replace("\\", "/"), spelled.replace("\\", "/")}:
            # WHATWG URL parsers drop tabs and newlines wherever they are.
            variants = (
                slashed,
                slashed.split("\x00", 1)[0].split("#", 1)[0],
                _CONTROL_RE.sub("", slashed),
            )
            for variant in variants:
                variant = "/" + variant.lstrip("/")
                views.update(dict.fromkeys(_views(variant)))
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


def _reading(path: str, *, lenient: bool, resolve: bool) -> str:
    """Empty and `.` segments dropped (`//` -> `/`); with `resolve`, RFC 3986
    remove_dot_segments (`..;x` counts as `..`, as Tomcat reads it); with
    `lenient`, `;params` dropped and trailing dots, whitespace and controls
    trimmed (as servlet containers, Windows servers and routers matching with
    `re`'s `$` read a segment)."""
    output: list[str] = []
    segments = path.split("/")[1:]
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if lenient:
            segment = _TRAILING_BLANK.sub("", segment.split(";", 1)[0])
            if segment not in (".", ".."):
                segment = _TRAILING_BLANK_OR_DOT.sub("", segment)
        bare = segment.split(";", 1)[0]
        # `.` means "here" to every reader; `..` only to those that resolve.
        if bare == "." or (resolve and bare == ".."):
            if bare == ".." and output:
                output.pop()
            if last:
                output.append("")
            continue
        if segment == "" and not last:
            continue
        output.append(segment)
    return "/" + "/".join(output)


def app_relative_path(path: str, script_name: str) -> str:
    """The normalised `path` after the mount point `script_name` (WSGI text); "" for the mount.

    Segments are compared decoded and exactly; BadRequest when `path` is not
    under `script_name`, or `script_name` has dot segments (never a mount point).
    `SCRIPT_NAME` may come from a client header (gunicorn takes it from one
    from its `forwarded_allow_ips`), hence the refusals.
    """
    mount = [segment for segment in script_name.split("/") if segment]
    if not mount:
        return path
    if any(segment in (".", "..") for segment in mount):
        raise BadRequest("SCRIPT_NAME has dot segments")
    segments = path.split("/")[1:]
    head = [wsgi_path(segment) for segment in segments[: len(mount)]]
    if head != mount:
        raise BadRequest("the request path is not under the application's SCRIPT_NAME")
    rest = segments[len(mount) :]
    return "/" + "/".join(rest) if rest else ""


def wsgi_path(path: str) -> str:
    """A percent-encoded path as WSGI gives `PATH_INFO`: decoded bytes as latin-1 text."""
    return unquote_to_bytes(path).decode("latin-1") if "%" in path else path


@dataclass(frozen=True)
class CompiledRule:
    """A rule ready to match readings of a path; `pattern` ignores case only for protect rules."""

    rule: Rule
    protect: bool
    pattern: re.Pattern[str]
    specificity: int
    methods: frozenset[str]

    def applies(self, path: str, method: str) -> bool:
        if self.methods and method.upper() not in self.methods:
            return False
        return self.pattern.match(path) is not None


def compile_rule(rule: Rule, protect: bool) -> CompiledRule:
    """Protect rules match any spelling's case; a public exception only its exact spelling.

    A case-insensitive protect rule covers applications that ignore case, and
    a case-sensitive exception never opens `/members/SIGNUP` to an
    application that reads it as a member page rather than the signup page.
    """
    if rule.prefix:
        prefix = _reading(unquote(rule.prefix), lenient=False, resolve=True).rstrip("/")
        pattern = re.escape(prefix) + r"(?:/.*)?\Z" if prefix else r"/.*\Z"
        specificity = len(prefix)
    elif rule.glob:
        pattern = _glob_pattern(rule.glob)
        specificity = len(rule.glob.replace("*", "").replace("?", ""))
    else:
        pattern = rule.regex
        specificity = len(re.sub(r"[\\^$.*+?()\[\]{}|]", "", rule.regex))
    flags = re.DOTALL | (re.IGNORECASE if protect else 0)
    methods = frozenset(method.upper() for method in rule.methods)
    if "GET" in methods:
        # Every framework answers HEAD with its GET handler.
        methods |= {"HEAD"}
    return CompiledRule(rule, protect, re.compile(pattern, flags), specificity, methods)


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
    """All rules; the most specific rule that applies to a reading decides it.

    Ties go to `[[protect]]`: when in doubt, a session is required. A path is
    protected when any of its readings is, for any method it claims.
    """

    def __init__(self, protect: Iterable[Rule], public: Iterable[Rule]) -> None:
        rules = [compile_rule(rule, True) for rule in protect]
        rules += [compile_rule(rule, False) for rule in public]
        # Most specific first; protect before public at equal specificity.
        self.rules = sorted(rules, key=lambda r: (-r.specificity, not r.protect))
        self.protect_rules = [rule for rule in self.rules if rule.protect]

    def __bool__(self) -> bool:
        return bool(self.rules)

    def find(self, match_path: str, method: str) -> CompiledRule | None:
        for rule in self.rules:
            if rule.applies(match_path, method):
                return rule
        return None

    def protected(self, match_path: str, method: str) -> CompiledRule | None:
        """The protect rule that governs this one reading, or None if it is open."""
        rule = self.find(match_path, method)
        return rule if rule is not None and rule.protect else None

    def governing(self, path: NormalisedPath, methods: Iterable[str]) -> CompiledRule | None:
        """The protect rule that governs any reading of `path` for any of `methods`, or None."""
        for method in methods:
            for view in path.views:
                rule = self.protected(view, method)
                if rule is not None:
                    return rule
        return None

    def refuses(self, path: NormalisedPath) -> bool:
        """Whether a suspicious spelling comes near a protected area (400)."""
        return path.suspicious and self.near_protected(*path.views, *lenient_match_paths(path.path))

    def near_protected(self, *match_paths: str) -> bool:
        """Whether any protect rule covers one of these paths, whatever the method or exceptions."""
        return any(rule.pattern.match(path) for rule in self.protect_rules for path in match_paths)
