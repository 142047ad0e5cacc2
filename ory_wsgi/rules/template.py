"""Templates in access rules (SPEC §16): the part of Go's text/template that Oathkeeper
rule files use, parsed once at load into closures, evaluated per request.

- `compile_template(text, where=...)` parses at load. Anything outside the subset is a
  `TemplateError` (a `ConfigError`): one line naming `where`, what is unsupported and
  its column. Unknown fields of the session are caught here too, not per request.
- `Template.render(TemplateContext)` evaluates. No Python code from the rule file runs
  and no attribute is read by a name the file gives: the evaluator walks dicts, lists,
  strings, numbers, bools and None, and the fixed fields of the session, its match
  context, URL, query and headers through tables written below.
- A missing key renders empty at any depth, and so does data of the wrong shape (a
  field of a string, an index out of range): a render never fails on session data.
  Oathkeeper prints `<no value>` or fails the request in these cases.
- A render fails only past its limits (output size, `range` iterations), with
  `TemplateRenderError`; the pipeline answers that like any handler error (closed).
- Values print as Go's fmt prints them (`[a b]`, `map[k:v]`, `1e+06`); `toJson` is
  Go's encoding/json (sorted keys, `<`, `>` and `&` escaped).

Handlers compile each template setting once when the rules load and render it per
request: `compile_template(cfg["headers"]["X-User"], where='rule "r1" mutators[0]...')`,
with `json=True` for id_token claims and remote_json payloads (see `compile_template`).
`Template.constant` is set when the text has no actions. docs/rules-templates.md is
the reference for users.
"""

from __future__ import annotations

import base64
import difflib
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from json import JSONEncoder
from operator import attrgetter
from typing import Any, Protocol
from urllib.parse import quote, quote_plus, unquote_plus

from werkzeug.datastructures import Headers

from ory_wsgi.errors import ConfigError

__all__ = [
    "MatchContext",
    "RequestURL",
    "Template",
    "TemplateContext",
    "TemplateError",
    "TemplateRenderError",
    "compile_template",
]

MAX_OUTPUT = 256 * 1024
MAX_RANGE_STEPS = 10_000
# Deeper data than this prints as if absent (Python's recursion limit stays far away).
_MAX_DEPTH = 64
# Deeper nesting of parentheses and blocks is refused at load.
_MAX_NESTING = 50
_MAX_WIDTH = 1024


class TemplateError(ConfigError):
    """A template is outside the supported subset; the message is one line."""


class TemplateRenderError(Exception):
    """A render went past its limits (output size or range iterations)."""


class HeaderSource(Protocol):
    """What a header mapping must offer: werkzeug's `Headers` and `EnvironHeaders` do."""

    def getlist(self, key: str) -> list[str]: ...

    def items(self) -> Iterable[tuple[str, str]]: ...


@dataclass(frozen=True, slots=True)
class RequestURL:
    """The matched URL, as Go's `url.URL` shows it to templates."""

    scheme: str = ""
    host: str = ""
    path: str = ""
    raw_query: str = ""
    fragment: str = ""
    # The path as sent (percent-encoded), when it differs from `path`'s plain escaping.
    raw_path: str = ""

    def query(self) -> QueryValues:
        return QueryValues(_parse_query(self.raw_query))

    def escaped_path(self) -> str:
        return self.raw_path or quote(self.path, safe="/$&+,:;=@")

    def hostname(self) -> str:
        host = self.host
        if host.startswith("["):
            return host[1 : host.find("]")] if "]" in host else host[1:]
        return host.rpartition(":")[0] if ":" in host else host

    def port(self) -> str:
        host = self.host
        colon = host.rfind(":")
        if colon < 0 or "]" in host[colon:]:
            return ""
        return host[colon + 1 :]

    def request_uri(self) -> str:
        uri = self.escaped_path() or "/"
        return f"{uri}?{self.raw_query}" if self.raw_query else uri

    def __str__(self) -> str:
        out = f"{self.scheme}://{self.host}" if self.scheme else self.host
        out += self.escaped_path()
        if self.raw_query:
            out += "?" + self.raw_query
        if self.fragment:
            out += "#" + quote(self.fragment, safe="/$&+,:;=@?!()*'")
        return out


@dataclass(frozen=True, slots=True)
class MatchContext:
    """Oathkeeper's `.MatchContext`: what the rule matched on."""

    regexp_capture_groups: tuple[str, ...] = ()
    url: RequestURL = RequestURL()
    method: str = ""
    header: HeaderSource = field(default_factory=Headers)


@dataclass(frozen=True, slots=True)
class TemplateContext:
    """Oathkeeper's `AuthenticationSession`, the data every template sees.

    Built once per request by the pipeline; nothing here is copied or converted
    until a template reads it, so werkzeug's `EnvironHeaders(environ)` (lazy) is the
    cheap `match.header`. `header` holds the headers set so far by the rule's
    handlers (Oathkeeper's `.Header`). `extra` is the authenticator's session data.
    """

    subject: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)
    header: HeaderSource = field(default_factory=Headers)
    match: MatchContext = MatchContext()


class HeaderView:
    """A header mapping as Go's `http.Header`: `Get`, `Values`, canonical keys."""

    __slots__ = ("source",)

    def __init__(self, source: HeaderSource) -> None:
        self.source = source

    def get(self, key: str) -> str:
        values = self.source.getlist(key)
        return values[0] if values else ""

    def values(self, key: str) -> list[str]:
        return list(self.source.getlist(key))

    def as_dict(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for key, value in self.source.items():
            out.setdefault(_canonical_header_key(key), []).append(value)
        return out


class QueryValues:
    """A parsed query string as Go's `url.Values`: `Get`, `Has`."""

    __slots__ = ("values",)

    def __init__(self, values: dict[str, list[str]]) -> None:
        self.values = values

    def get(self, key: str) -> str:
        found = self.values.get(key)
        return found[0] if found else ""

    def has(self, key: str) -> bool:
        return key in self.values

    def as_dict(self) -> dict[str, list[str]]:
        return self.values


_BAD_ESCAPE_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _parse_query(raw: str) -> dict[str, list[str]]:
    """Go's `url.ParseQuery`: `&`-separated; pairs with `;` or bad escapes are dropped."""
    out: dict[str, list[str]] = {}
    for part in raw.split("&"):
        if not part or ";" in part or _BAD_ESCAPE_RE.search(part):
            continue
        key, _, value = part.partition("=")
        out.setdefault(unquote_plus(key), []).append(unquote_plus(value))
    return out


def _canonical_header_key(key: str) -> str:
    """Go's `CanonicalMIMEHeaderKey`: `x-user-id` -> `X-User-Id`."""
    if not key or not all(c.isascii() and (c.isalnum() or c in "!#$%&'*+-.^_`|~") for c in key):
        return key
    return "-".join(part[:1].upper() + part[1:].lower() for part in key.split("-"))


# --- Go's printing of values ---------------------------------------------------------


class _Absent(Exception):
    """Data too deep to print, or not expressible in JSON: the value counts as absent."""


def _shortest(value: float) -> tuple[str, str, int]:
    """(sign, significant digits, position of the decimal point) of the shortest repr."""
    sign, digits, exponent = Decimal(repr(value)).as_tuple()
    text = "".join(map(str, digits))
    assert isinstance(exponent, int)
    point = exponent + len(text)
    stripped = text.rstrip("0") or "0"
    return ("-" if sign else ""), stripped, point


def _plain(sign: str, digits: str, point: int) -> str:
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return f"{sign}{digits}{'0' * (point - len(digits))}"
    return f"{sign}{digits[:point]}.{digits[point:]}"


def _exp(sign: str, digits: str, point: int) -> str:
    x = point - 1
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{sign}{mantissa}e{'-' if x < 0 else '+'}{abs(x):02d}"


def _special_float(value: float) -> str | None:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    return None


def _go_float(value: float) -> str:
    """Go's `%v` of a float64: shortest digits, `e` form from 1e+06 and below 1e-04."""
    special = _special_float(value)
    if special is not None:
        return special
    sign, digits, point = _shortest(value)
    if point - 1 < -4 or point - 1 >= 6:
        return _exp(sign, digits, point)
    return _plain(sign, digits, point)


def _json_float(value: float) -> str:
    """Go's encoding/json for a float64 (`e` form below 1e-6 and from 1e21)."""
    if value == 0:
        return "0" if math.copysign(1.0, value) > 0 else "-0"
    sign, digits, point = _shortest(value)
    if abs(value) < 1e-6 or abs(value) >= 1e21:
        text = _exp(sign, digits, point)
        return re.sub(r"e-0(\d)$", r"e-\1", text)
    return _plain(sign, digits, point)


def _go_quote(text: str, ascii_only: bool = False) -> str:
    """Go's `strconv.Quote` (and `QuoteToASCII` for `%+q`)."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch.isprintable() and not (ascii_only and code >= 0x80):
            out.append(ch)
        elif ch in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[ch])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


_SHORT_ESCAPES = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
}


def _known_as_map(value: object) -> dict[str, Any] | None:
    """The Go map behind a header or query view, else None."""
    if type(value) is HeaderView or type(value) is QueryValues:
        return value.as_dict()
    return None


def _go_v(value: Any, depth: int = 0) -> str:
    """Go's `%v` of a value inside a structure (`<nil>` for nil, as fmt prints it)."""
    if depth > _MAX_DEPTH:
        raise _Absent
    kind = type(value)
    if kind is str:
        return value  # type: ignore[no-any-return]
    if value is None:
        return "<nil>"
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    if kind is float:
        return _go_float(value)
    if isinstance(value, Mapping):
        return _go_map(value, depth)
    if isinstance(value, list | tuple):
        return "[" + " ".join(_go_v(item, depth + 1) for item in value) + "]"
    return _go_known(value, depth)


def _go_map(value: Mapping[Any, Any], depth: int) -> str:
    keys = sorted(value, key=_sort_key)
    inner = " ".join(f"{_go_v(k, depth + 1)}:{_go_v(value[k], depth + 1)}" for k in keys)
    return f"map[{inner}]"


def _sort_key(key: Any) -> tuple[int, Any]:
    # Go sorts a map's keys by value; JSON objects have string keys only.
    return (0, key) if isinstance(key, str) else (1, repr(key))


def _go_known(value: Any, depth: int) -> str:
    as_map = _known_as_map(value)
    if as_map is not None:
        return _go_map(as_map, depth)
    kind = type(value)
    if kind is RequestURL:
        return str(value)
    if kind is MatchContext:
        parts = (
            _go_v(list(value.regexp_capture_groups), depth + 1),
            str(value.url),
            value.method,
            _go_map(HeaderView(value.header).as_dict(), depth + 1),
        )
        return "{" + " ".join(parts) + "}"
    if kind is TemplateContext:
        parts = (
            value.subject,
            _go_map(value.extra, depth + 1),
            _go_map(HeaderView(value.header).as_dict(), depth + 1),
            _go_known(value.match, depth + 1),
        )
        return "&{" + " ".join(parts) + "}"
    # Anything else is not template data: it is not asked to describe itself.
    return ""


def _output(value: Any) -> str:
    """What an action prints: absent and null print nothing, the rest as Go's `%v`."""
    if type(value) is str:
        return value
    if value is None:
        return ""
    try:
        return _go_v(value)
    except _Absent:
        return ""


def _go_json(value: Any, depth: int = 0) -> str:
    """Go's encoding/json; raises _Absent where Go's Marshal fails (sprig then gives "")."""
    out: list[str] = []
    _json_into(value, out, depth)
    return "".join(out)


def _sorted_keys(value: Mapping[Any, Any]) -> list[Any]:
    try:
        return sorted(value)
    except TypeError:
        return sorted(value, key=_sort_key)


def _json_into(value: Any, out: list[str], depth: int) -> None:
    kind = type(value)
    if kind is str:
        out.append(_json_string(value))
    elif value is None:
        out.append("null")
    elif kind is bool:
        out.append("true" if value else "false")
    elif kind is int:
        out.append(str(value))
    elif kind is float:
        if math.isnan(value) or math.isinf(value):
            raise _Absent
        out.append(_json_float(value))
    elif depth >= _MAX_DEPTH:
        raise _Absent
    elif kind is dict or isinstance(value, Mapping):
        out.append("{")
        for i, key in enumerate(_sorted_keys(value)):
            if i:
                out.append(",")
            out.append(_json_string(key if type(key) is str else _go_v(key)))
            out.append(":")
            _json_into(value[key], out, depth + 1)
        out.append("}")
    elif kind is list or kind is tuple:
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _json_into(item, out, depth + 1)
        out.append("]")
    else:
        out.append(_json_known(value, depth))


_JSON_PLAIN_RE = re.compile('[^"\\\\\x00-\x1f<>&\u2028\u2029\ud800-\udfff]*')


def _json_known(value: Any, depth: int) -> str:
    as_map = _known_as_map(value)
    if as_map is not None:
        return _go_json(as_map, depth)
    kind = type(value)
    if kind is RequestURL:
        url = {
            "Scheme": value.scheme,
            "Opaque": "",
            "User": None,
            "Host": value.host,
            "Path": value.path,
            "RawPath": value.raw_path,
            "OmitHost": False,
            "ForceQuery": False,
            "RawQuery": value.raw_query,
            "Fragment": value.fragment,
            "RawFragment": "",
        }
        # Go keeps the struct's field order, not sorted keys.
        return "{" + ",".join(f'"{k}":{_go_json(v, depth + 1)}' for k, v in url.items()) + "}"
    if kind is MatchContext:
        return (
            '{"regexp_capture_groups":'
            + _go_json(list(value.regexp_capture_groups), depth + 1)
            + ',"url":'
            + _json_known(value.url, depth + 1)
            + ',"method":'
            + _json_string(value.method)
            + ',"header":'
            + _go_json(HeaderView(value.header).as_dict(), depth + 1)
            + "}"
        )
    if kind is TemplateContext:
        return (
            '{"subject":'
            + _json_string(value.subject)
            + ',"extra":'
            + _go_json(value.extra, depth + 1)
            + ',"header":'
            + _go_json(HeaderView(value.header).as_dict(), depth + 1)
            + ',"match_context":'
            + _json_known(value.match, depth + 1)
            + "}"
        )
    raise _Absent


_JSON_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    # Go writes \b and \f short since 1.22, as Python does.
    "\b": "\\b",
    "\f": "\\f",
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}
_JSON_ESCAPE_RE = re.compile('["\\\\\x00-\x1f<>&\u2028\u2029\ud800-\udfff]')


def _json_escape(match: re.Match[str]) -> str:
    ch = match.group()
    if ch in _JSON_ESCAPES:
        return _JSON_ESCAPES[ch]
    if "\ud800" <= ch <= "\udfff":
        return "\ufffd"  # Go replaces invalid UTF-8 likewise
    return f"\\u{ord(ch):04x}"


def _json_string(text: str) -> str:
    if _JSON_PLAIN_RE.fullmatch(text):
        return '"' + text + '"'
    return '"' + _JSON_ESCAPE_RE.sub(_json_escape, text) + '"'


# Inside a JSON string only these need escaping; `<>&` stay as Oathkeeper prints them.
_JSON_INNER_RE = re.compile('["\\\\\x00-\x1f\u2028\u2029\ud800-\udfff]')


def _json_inner(text: str) -> str:
    """`text` escaped for the inside of a JSON string (no quotes added)."""
    return _JSON_INNER_RE.sub(_json_escape, text)


_JSON_OUT, _JSON_IN, _JSON_IN_ESCAPE = 0, 1, 2


def _scan_json(text: str, state: int) -> int:
    """Whether the JSON text so far ends inside a string (and after a backslash)."""
    for ch in text:
        if state == _JSON_IN_ESCAPE:
            state = _JSON_IN
        elif state == _JSON_IN:
            if ch == "\\":
                state = _JSON_IN_ESCAPE
            elif ch == '"':
                state = _JSON_OUT
        elif ch == '"':
            state = _JSON_IN
    return state


# --- printf ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Verb:
    flags: str
    width: int | None
    precision: int | None
    verb: str


_VERB_RE = re.compile(r"%([-+# 0]*)(\d+)?(?:\.(\d*))?(.)?", re.DOTALL)


def _parse_format(fmt: str) -> tuple[str | _Verb, ...] | str:
    """The pieces of a printf format, or a description of what is unsupported in it."""
    pieces: list[str | _Verb] = []
    pos = 0
    while True:
        start = fmt.find("%", pos)
        if start < 0:
            if pos < len(fmt):
                pieces.append(fmt[pos:])
            return tuple(pieces)
        if start > pos:
            pieces.append(fmt[pos:start])
        if fmt.startswith("%%", start):
            pieces.append("%")
            pos = start + 2
            continue
        match = _VERB_RE.match(fmt, start)
        assert match is not None
        flags, width, precision, verb = match.groups()
        if verb in ("[", "*") or (verb is None and fmt[match.end() - 1 : match.end()] == "*"):
            return "argument indexes and * widths in printf formats are not supported"
        numbers = [int(n) for n in (width, precision) if n]
        if any(n > _MAX_WIDTH for n in numbers):
            return f"printf widths and precisions above {_MAX_WIDTH} are not supported"
        pieces.append(
            _Verb(
                flags,
                int(width) if width else None,
                int(precision or 0) if precision is not None else None,
                verb or "",
            )
        )
        pos = match.end()


def _go_type(value: Any) -> str:
    if value is None:
        return "<nil>"
    if type(value) is bool:
        return "bool"
    if type(value) is int:
        return "int"
    if type(value) is float:
        return "float64"
    if type(value) is str:
        return "string"
    if isinstance(value, Mapping):
        return "map[string]interface {}"
    if isinstance(value, list | tuple):
        return "[]interface {}"
    return {
        RequestURL: "*url.URL",
        HeaderView: "http.Header",
        QueryValues: "url.Values",
        MatchContext: "authn.MatchContext",
        TemplateContext: "*authn.AuthenticationSession",
    }.get(type(value), "?")


def _bad_verb(value: Any, verb: str) -> str:
    if value is None:
        return f"%!{verb}(<nil>)"
    return f"%!{verb}({_go_type(value)}={_go_v(value)})"


def _signed(text: str, flags: str) -> str:
    if not text.startswith("-"):
        if "+" in flags:
            return "+" + text
        if " " in flags:
            return " " + text
    return text


def _format_int(value: int, spec: _Verb) -> str:
    verb = spec.verb
    if verb in ("d", "v"):
        return _signed(str(value), spec.flags)
    if verb in ("x", "X", "o", "b"):
        base = {"x": "x", "X": "X", "o": "o", "b": "b"}[verb]
        digits = format(abs(value), base)
        if "#" in spec.flags and verb in "xX":
            digits = ("0x" if verb == "x" else "0X") + digits
        return _signed(("-" if value < 0 else "") + digits, spec.flags)
    if verb in ("c", "q") and 0 <= value <= 0x10FFFF:
        char = chr(value)
        if verb == "c":
            return char
        quoted = _go_quote(char, ascii_only="+" in spec.flags)[1:-1]
        return "'" + quoted.replace('\\"', '"').replace("'", "\\'") + "'"
    if verb == "U" and value >= 0:
        return f"U+{value:04X}"
    return _bad_verb(value, verb)


def _format_float(value: float, spec: _Verb) -> str:
    verb = spec.verb
    special = _special_float(value) if math.isnan(value) or math.isinf(value) else None
    if special is not None and verb in "eEfFgGv":
        return _signed(special, spec.flags)
    if verb == "v" or (verb in "gG" and spec.precision is None):
        text = _go_float(value)
        return _signed(text.upper() if verb == "G" else text, spec.flags)
    if verb in "eEfFgG":
        precision = 6 if spec.precision is None else spec.precision
        return _signed(format(value, f".{precision}{verb}"), spec.flags)
    return _bad_verb(value, verb)


def _format_str(value: str, spec: _Verb) -> str:
    verb = spec.verb
    if verb in ("s", "v"):
        return value if spec.precision is None else value[: spec.precision]
    if verb == "q":
        return _go_quote(value, ascii_only="+" in spec.flags)
    if verb in ("x", "X"):
        hexed = value.encode("utf-8", "surrogatepass").hex()
        return hexed.upper() if verb == "X" else hexed
    return _bad_verb(value, verb)


def _format_one(value: Any, spec: _Verb, depth: int = 0) -> str:
    """One printf argument; verb, width and flags apply to each element of lists and maps."""
    if depth > _MAX_DEPTH:
        raise _Absent
    kind = type(value)
    verb = spec.verb
    if kind is str:
        return _pad(_format_str(value, spec), spec, False)
    if value is None:
        # An absent value is the empty string here, as everywhere in templates.
        if verb in ("s", "v", "q"):
            return _pad(_format_str("", spec), spec, False)
        return _bad_verb(None, verb)
    if kind is bool:
        if verb in ("t", "v"):
            return _pad("true" if value else "false", spec, False)
        return _bad_verb(value, verb)
    if kind is int:
        return _pad(_format_int(value, spec), spec, verb not in "cqU")
    if kind is float:
        return _pad(_format_float(value, spec), spec, True)
    if kind is RequestURL:
        # A fmt.Stringer: the string verbs format its String().
        if verb in ("s", "v", "q", "x", "X"):
            return _pad(_format_str(str(value), spec), spec, False)
        return _bad_verb(value, verb)
    as_map = _known_as_map(value)
    if as_map is not None:
        value = as_map
    if isinstance(value, Mapping):
        keys = sorted(value, key=_sort_key)
        inner = " ".join(
            f"{_format_one(k, spec, depth + 1)}:{_format_one(value[k], spec, depth + 1)}"
            for k in keys
        )
        return f"map[{inner}]"
    if isinstance(value, list | tuple):
        return "[" + " ".join(_format_one(item, spec, depth + 1) for item in value) + "]"
    return _go_known(value, depth) if verb in ("s", "v") else _bad_verb(value, verb)


def _pad(text: str, spec: _Verb, numeric: bool) -> str:
    width = spec.width
    if width is None or len(text) >= width or text.startswith("%!"):
        return text
    if "-" in spec.flags:
        return text.ljust(width)
    if "0" in spec.flags and numeric:
        sign = text[0] if text[:1] in ("-", "+", " ") else ""
        return sign + text[len(sign) :].rjust(width - len(sign), "0")
    return text.rjust(width)


def _sprintf(pieces: tuple[str | _Verb, ...], args: Sequence[Any]) -> str:
    out: list[str] = []
    index = 0
    for piece in pieces:
        if type(piece) is str:
            out.append(piece)
            continue
        assert isinstance(piece, _Verb)
        if not piece.verb:
            out.append("%!(NOVERB)")
        elif index >= len(args):
            out.append(f"%!{piece.verb}(MISSING)")
        else:
            try:
                out.append(_format_one(args[index], piece))
            except _Absent:
                pass
            index += 1
    if index < len(args):
        extra = ", ".join(
            f"{_go_type(arg)}={_output(arg)}" if arg is not None else "<nil>"
            for arg in args[index:]
        )
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)


# --- functions --------------------------------------------------------------------------


def _truth(value: Any) -> bool:
    """Go's truth: false, 0, "", nil and empty lists and maps are false."""
    if value is None:
        return False
    if type(value) in (str, bool, int, float, list, tuple, dict):
        return bool(value)
    as_map = _known_as_map(value)
    if as_map is not None:
        return bool(as_map)
    if isinstance(value, Mapping | list | tuple):
        return len(value) > 0
    return True


def _strval(value: Any) -> str:
    """Sprig's strval, with absent values empty."""
    return _output(value)


def _is_number(value: Any) -> bool:
    return type(value) in (int, float)


def _go_equal(a: Any, b: Any) -> bool:
    if type(a) is bool or type(b) is bool:
        return type(a) is type(b) and a == b
    if _is_number(a) and _is_number(b):
        return bool(a == b)
    if type(a) is str and type(b) is str:
        return a == b
    if a is None or b is None:
        return a is b
    # Go refuses to compare lists and maps; here they are simply not equal.
    return False


def _deep_equal(a: Any, b: Any, depth: int = 0) -> bool:
    if depth > _MAX_DEPTH:
        return False
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(
            _deep_equal(x, y, depth + 1) for x, y in zip(a, b, strict=True)
        )
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_deep_equal(a[k], b[k], depth + 1) for k in a)
    return _go_equal(a, b)


def _compare(a: Any, b: Any) -> int | None:
    if (_is_number(a) and _is_number(b)) or (type(a) is str and type(b) is str):
        return (a > b) - (a < b)  # type: ignore[no-any-return]
    return None


def _fn_eq(a: Any, *others: Any) -> bool:
    return any(_go_equal(a, b) for b in others)


def _fn_ne(a: Any, b: Any) -> bool:
    return not _go_equal(a, b)


def _ordered(test: Callable[[int], bool]) -> Callable[[Any, Any], bool]:
    def compare(a: Any, b: Any) -> bool:
        order = _compare(a, b)
        return order is not None and test(order)

    return compare


def _fn_len(value: Any) -> int:
    if type(value) is str:
        return len(value.encode("utf-8", "surrogatepass"))  # Go counts bytes
    as_map = _known_as_map(value)
    if as_map is not None:
        return len(as_map)
    if isinstance(value, Mapping | list | tuple):
        return len(value)
    return 0


def _index_one(value: Any, key: Any) -> Any:
    if isinstance(value, Mapping):
        return value.get(key) if type(key) is str else None
    if isinstance(value, list | tuple):
        if type(key) is int and 0 <= key < len(value):
            return value[key]
        return None
    if type(value) is HeaderView:
        return value.values(key) if type(key) is str else None
    if type(value) is QueryValues:
        return list(value.values.get(key, ())) if type(key) is str else None
    return None


def _fn_index(value: Any, *keys: Any) -> Any:
    for key in keys:
        value = _index_one(value, key)
    return value


def _fn_print_index(value: Any, position: Any) -> str:
    if isinstance(value, list | tuple) and type(position) is int and 0 <= position < len(value):
        return _output(value[position])
    return ""


def _sprint(args: Sequence[Any]) -> str:
    """Go's fmt.Sprint: a space between operands when neither is a string."""
    out: list[str] = []
    for i, arg in enumerate(args):
        if i and type(arg) is not str and type(args[i - 1]) is not str:
            out.append(" ")
        out.append(_output(arg))
    return "".join(out)


def _fn_urlquery(*args: Any) -> str:
    text = args[0] if len(args) == 1 and type(args[0]) is str else _sprint(args)
    return quote_plus(text, safe="")


def _to_int(value: Any) -> int:
    """Sprig's toInt64: numbers truncated, numeric strings parsed, anything else 0."""
    if type(value) is int:
        return value
    if type(value) is bool:
        return int(value)
    if type(value) is float:
        return int(value) if math.isfinite(value) else 0
    if type(value) is str:
        text = value.strip()
        if text.endswith(".0"):
            text = text[:-2]
        try:
            return int(text, 0) if len(text) <= 32 else 0
        except ValueError:
            return 0
    return 0


def _strslice(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [_strval(item) for item in value if item is not None]
    return [_strval(value)]


def _empty(value: Any) -> bool:
    return not _truth(value)


def _fn_default(fallback: Any, *given: Any) -> Any:
    if not given or _empty(given[0]):
        return fallback
    return given[0]


def _fn_coalesce(*values: Any) -> Any:
    return next((value for value in values if not _empty(value)), None)


def _fn_has(needle: Any, haystack: Any) -> bool:
    if isinstance(haystack, list | tuple):
        return any(_deep_equal(needle, item) for item in haystack)
    return False


def _fn_replace(old: Any, new: Any, text: Any) -> str:
    old, new, text = _strval(old), _strval(new), _strval(text)
    count = text.count(old) if old else len(text) + 1
    if len(text) + count * len(new) > MAX_OUTPUT:
        raise TemplateRenderError(f"replace would produce more than {MAX_OUTPUT} characters")
    return str(text.replace(old, new))


def _fn_split_list(separator: Any, text: Any) -> list[str]:
    separator, text = _strval(separator), _strval(text)
    return text.split(separator) if separator else list(text)


def _fn_quote(*values: Any) -> str:
    return " ".join(_go_quote(_strval(value)) for value in values if value is not None)


def _fn_squote(*values: Any) -> str:
    return " ".join(f"'{_strval(value)}'" for value in values if value is not None)


def _fn_to_json(value: Any) -> str:
    try:
        return _to_json(value)
    except _Absent:
        return ""


def _not_json(value: Any) -> Any:
    raise TypeError


def _to_json(value: Any) -> str:
    """`_go_json`, through the C encoder when its output is already Go's."""
    try:
        text = _ENCODER.encode(value)
    except (TypeError, ValueError, RecursionError):
        return _go_json(value)
    # Python and Go write floats differently, and Go replaces lone surrogates. A
    # float-like token inside a string only costs the slower path.
    if _FLOAT_TOKEN_RE.search(text) or _SURROGATE_RE.search(text):
        return _go_json(value)
    return text.translate(_GO_JSON_ESCAPES)


_ENCODER = JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False, default=_not_json
)
_FLOAT_TOKEN_RE = re.compile(
    r"(?:^|[:,\[])-?[0-9]+(?:\.[0-9]+(?:[eE][-+]?[0-9]+)?|[eE][-+]?[0-9]+)(?=[,\]}]|$)"
)
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_GO_JSON_ESCAPES = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


def _strings(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Sprig's string functions take strings: other values are printed first."""

    def call(*args: Any) -> Any:
        return fn(*(_strval(arg) for arg in args))

    return call


# name -> (function, fewest arguments, most arguments or None)
_FUNCTIONS: dict[str, tuple[Callable[..., Any], int, int | None]] = {
    # Go's builtins (print is Oathkeeper's: one argument, nil prints nothing)
    "print": (_output, 1, 1),
    "index": (_fn_index, 1, None),
    "len": (_fn_len, 1, 1),
    "not": (lambda value: not _truth(value), 1, 1),
    "urlquery": (_fn_urlquery, 0, None),
    "eq": (_fn_eq, 2, None),
    "ne": (_fn_ne, 2, 2),
    "lt": (_ordered(lambda order: order < 0), 2, 2),
    "le": (_ordered(lambda order: order <= 0), 2, 2),
    "gt": (_ordered(lambda order: order > 0), 2, 2),
    "ge": (_ordered(lambda order: order >= 0), 2, 2),
    # Oathkeeper's
    "printIndex": (_fn_print_index, 2, 2),
    # Sprig's, the ones rule files use
    "lower": (_strings(str.lower), 1, 1),
    "upper": (_strings(str.upper), 1, 1),
    "trim": (_strings(str.strip), 1, 1),
    "trimPrefix": (_strings(lambda prefix, text: text.removeprefix(prefix)), 2, 2),
    "trimSuffix": (_strings(lambda suffix, text: text.removesuffix(suffix)), 2, 2),
    "contains": (_strings(lambda part, text: part in text), 2, 2),
    "hasPrefix": (_strings(lambda prefix, text: text.startswith(prefix)), 2, 2),
    "hasSuffix": (_strings(lambda suffix, text: text.endswith(suffix)), 2, 2),
    "replace": (_fn_replace, 3, 3),
    "splitList": (_fn_split_list, 2, 2),
    "join": (lambda separator, value: _strval(separator).join(_strslice(value)), 2, 2),
    "quote": (_fn_quote, 0, None),
    "squote": (_fn_squote, 0, None),
    "toJson": (_fn_to_json, 1, 1),
    "toString": (_strval, 1, 1),
    "b64enc": (_strings(lambda text: base64.b64encode(text.encode()).decode()), 1, 1),
    "default": (_fn_default, 1, 2),
    "empty": (_empty, 1, 1),
    "coalesce": (_fn_coalesce, 0, None),
    "has": (_fn_has, 2, 2),
    "add": (lambda *values: sum(_to_int(value) for value in values), 0, None),
    "add1": (lambda value: _to_int(value) + 1, 1, 1),
    "sub": (lambda a, b: _to_int(a) - _to_int(b), 2, 2),
    "int": (_to_int, 1, 1),
}
# and, or and printf are compiled apart (short-circuit; a format parsed at load).
_SPECIAL_FUNCTIONS = ("and", "or", "printf")
_KNOWN_NAMES = sorted([*_FUNCTIONS, *_SPECIAL_FUNCTIONS])


# --- the session's fixed fields ---------------------------------------------------------


class _Kind:
    """Static kinds next to the known classes: any data, or a value without fields."""

    def __init__(self, name: str) -> None:
        self.name = name


_DYNAMIC = _Kind("data")
_LEAF = _Kind("value")
_STR = _Kind("string")
_PLAIN = (_LEAF, _STR)
# Functions whose result is always a string: printing it again is skipped.
_STR_FUNCTIONS = frozenset(
    "print printIndex printf urlquery lower upper trim trimPrefix trimSuffix replace join"
    " quote squote toJson toString b64enc".split()
)


@dataclass(frozen=True, slots=True)
class _Member:
    fn: Callable[..., Any]
    arity: int
    result: object
    # The Python attribute behind a plain field, for one attrgetter over a whole chain.
    attr: str | None = None


def _string_arg(method: Callable[[Any, str], Any]) -> Callable[[Any, Any], Any]:
    return lambda obj, key: method(obj, key) if type(key) is str else None


_TABLES: dict[type, dict[str, _Member]] = {
    TemplateContext: {
        "Subject": _Member(lambda o: o.subject, 0, _STR, "subject"),
        "Extra": _Member(lambda o: o.extra, 0, _DYNAMIC, "extra"),
        "Header": _Member(lambda o: HeaderView(o.header), 0, HeaderView),
        "MatchContext": _Member(lambda o: o.match, 0, MatchContext, "match"),
    },
    MatchContext: {
        "RegexpCaptureGroups": _Member(
            lambda o: o.regexp_capture_groups, 0, _LEAF, "regexp_capture_groups"
        ),
        "URL": _Member(lambda o: o.url, 0, RequestURL, "url"),
        "Method": _Member(lambda o: o.method, 0, _STR, "method"),
        "Header": _Member(lambda o: HeaderView(o.header), 0, HeaderView),
    },
    RequestURL: {
        "Scheme": _Member(lambda o: o.scheme, 0, _STR, "scheme"),
        "Opaque": _Member(lambda o: "", 0, _STR),
        "Host": _Member(lambda o: o.host, 0, _STR, "host"),
        "Path": _Member(lambda o: o.path, 0, _STR, "path"),
        "RawPath": _Member(lambda o: o.raw_path, 0, _STR, "raw_path"),
        "RawQuery": _Member(lambda o: o.raw_query, 0, _STR, "raw_query"),
        "Fragment": _Member(lambda o: o.fragment, 0, _STR, "fragment"),
        "Query": _Member(lambda o: o.query(), 0, QueryValues),
        "Hostname": _Member(lambda o: o.hostname(), 0, _STR),
        "Port": _Member(lambda o: o.port(), 0, _STR),
        "EscapedPath": _Member(lambda o: o.escaped_path(), 0, _STR),
        "RequestURI": _Member(lambda o: o.request_uri(), 0, _STR),
        "String": _Member(str, 0, _STR),
        "IsAbs": _Member(lambda o: bool(o.scheme), 0, _LEAF),
    },
    HeaderView: {
        "Get": _Member(_string_arg(HeaderView.get), 1, _STR),
        "Values": _Member(_string_arg(HeaderView.values), 1, _LEAF),
    },
    QueryValues: {
        "Get": _Member(_string_arg(QueryValues.get), 1, _STR),
        "Has": _Member(_string_arg(QueryValues.has), 1, _LEAF),
    },
}
_TYPE_NAMES: dict[object, str] = {
    TemplateContext: "the session",
    MatchContext: ".MatchContext",
    RequestURL: ".MatchContext.URL",
    HeaderView: "a header map",
    QueryValues: "a query map",
}


def _field(obj: Any, name: str) -> Any:
    """`.name` of any value at render time: a dict key, a known field, else absent."""
    if type(obj) is dict:
        return obj.get(name)
    table = _TABLES.get(type(obj))
    if table is not None:
        member = table.get(name)
        if member is None:
            # Go's http.Header and url.Values are maps: other names are keys.
            return _index_one(obj, name)
        return member.fn(obj) if member.arity == 0 else None
    if isinstance(obj, Mapping):
        return obj.get(name)
    return None


def _call_method(obj: Any, name: str, args: Sequence[Any]) -> Any:
    table = _TABLES.get(type(obj))
    member = table.get(name) if table is not None else None
    if member is None or member.arity != len(args):
        return None
    return member.fn(obj, *args)


# --- lexing -----------------------------------------------------------------------------

_SPACE = " \t\r\n"
_NUMBER_RE = re.compile(
    r"[+-]?(?:0[xX][0-9a-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+"
    r"|(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)(?:[eE][+-]?\d+)?)"
)
_WORD_RE = re.compile(r"\w+")
_STRING_ESCAPES = {
    "a": 7,
    "b": 8,
    "f": 12,
    "n": 10,
    "r": 13,
    "t": 9,
    "v": 11,
    "\\": 92,
    '"': 34,
}
_CONTROL_WORDS = {"if", "range", "with", "else", "end"}
_UNSUPPORTED_WORDS = {"define", "template", "block", "break", "continue"}


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # space field dot var ident string number bool nil ( ) | := = ,
    value: Any
    pos: int


class _Source:
    """The template text, and errors that point into it."""

    def __init__(self, text: str, where: str) -> None:
        self.text = text
        self.where = where or "template"

    def error(self, message: str, pos: int) -> TemplateError:
        line = self.text.count("\n", 0, pos) + 1
        column = pos - (self.text.rfind("\n", 0, pos) + 1) + 1
        at = f"column {column}" if line == 1 else f"line {line}, column {column}"
        return TemplateError(f"{self.where}: {message} at {at}")


def _segments(src: _Source) -> list[tuple[str, Any, int]]:
    """Text and actions in order: ("text", str, pos) and ("action", tokens, pos)."""
    text, n = src.text, len(src.text)
    out: list[tuple[str, Any, int]] = []
    pos = 0
    trim_next = False
    while True:
        start = text.find("{{", pos)
        chunk = text[pos:] if start < 0 else text[pos:start]
        if trim_next:
            chunk = chunk.lstrip(_SPACE)
        if start < 0:
            if chunk:
                out.append(("text", chunk, pos))
            return out
        i = start + 2
        if text.startswith("-", i) and i + 1 < n and text[i + 1] in _SPACE:
            chunk = chunk.rstrip(_SPACE)
            i += 2
        if chunk:
            out.append(("text", chunk, pos))
        if text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise src.error("unclosed comment", start)
            j = end + 2
            if text.startswith("}}", j):
                pos, trim_next = j + 2, False
            elif j < n and text[j] in _SPACE and text.startswith("-}}", j + 1):
                pos, trim_next = j + 4, True
            else:
                raise src.error("comment ends before closing delimiter", end)
            continue
        tokens, pos, trim_next = _lex_action(src, i, start)
        out.append(("action", tokens, start))


def _lex_action(src: _Source, i: int, start: int) -> tuple[list[_Token], int, bool]:
    text, n = src.text, len(src.text)
    tokens: list[_Token] = []
    while True:
        if i >= n:
            raise src.error("unclosed action", start)
        c = text[i]
        if text.startswith("}}", i):
            return tokens, i + 2, False
        if c in _SPACE:
            j = i
            while j < n and text[j] in _SPACE:
                if text.startswith("-}}", j + 1):
                    return tokens, j + 4, True
                j += 1
            tokens.append(_Token("space", None, i))
            i = j
        elif c == '"':
            value, i2 = _lex_string(src, i)
            tokens.append(_Token("string", value, i))
            i = i2
        elif c == "`":
            end = text.find("`", i + 1)
            if end < 0:
                raise src.error("unterminated raw quoted string", i)
            tokens.append(_Token("string", text[i + 1 : end], i))
            i = end + 1
        elif c == "'":
            raise src.error("character constants are not supported", i)
        elif (c.isdigit() and c.isascii()) or (
            c in "+-." and i + 1 < n and text[i + 1].isdigit() and text[i + 1].isascii()
        ):
            i = _lex_number(src, i, tokens)
        elif c == ".":
            match = _WORD_RE.match(text, i + 1)
            if match:
                tokens.append(_Token("field", match.group(), i))
                i = match.end()
            else:
                tokens.append(_Token("dot", None, i))
                i += 1
        elif c == "$":
            match = _WORD_RE.match(text, i + 1)
            name = "$" + (match.group() if match else "")
            tokens.append(_Token("var", name, i))
            i += len(name)
        elif c.isalpha() or c == "_":
            match = _WORD_RE.match(text, i)
            assert match is not None
            word = match.group()
            if word in ("true", "false"):
                tokens.append(_Token("bool", word == "true", i))
            elif word == "nil":
                tokens.append(_Token("nil", None, i))
            else:
                tokens.append(_Token("ident", word, i))
            i = match.end()
        elif text.startswith(":=", i):
            tokens.append(_Token(":=", None, i))
            i += 2
        elif c in "()|=,":
            tokens.append(_Token(c, None, i))
            i += 1
        else:
            raise src.error(f"unexpected {c!r} in action", i)


def _lex_number(src: _Source, i: int, tokens: list[_Token]) -> int:
    match = _NUMBER_RE.match(src.text, i)
    assert match is not None
    literal = match.group()
    end = match.end()
    if end < len(src.text) and (src.text[end].isalnum() or src.text[end] in "._"):
        raise src.error(f"bad number syntax: {src.text[i : end + 1]!r}", i)
    clean = literal.replace("_", "")
    value: int | float
    try:
        if re.fullmatch(r"[+-]?0[0-7]+", clean):
            value = int(clean, 8)
        elif re.fullmatch(r"[+-]?(0[xXoObB][0-9a-fA-F]+|\d+)", clean):
            value = int(clean, 0)
        else:
            value = float(clean)
    except ValueError:
        raise src.error(f"bad number syntax: {literal!r}", i) from None
    if type(value) is int and not -(2**63) <= value < 2**63:
        raise src.error(f"number out of range: {literal}", i)
    tokens.append(_Token("number", value, i))
    return end


def _lex_string(src: _Source, i: int) -> tuple[str, int]:
    """A Go interpreted string literal starting at `i`; returns its value and end."""
    text, n = src.text, len(src.text)
    out = bytearray()
    j = i + 1
    while True:
        if j >= n or text[j] == "\n":
            raise src.error("unterminated quoted string", i)
        c = text[j]
        if c == '"':
            return out.decode("utf-8", "replace"), j + 1
        if c != "\\":
            out += c.encode("utf-8", "surrogatepass")
            j += 1
            continue
        e = text[j + 1 : j + 2]
        if e in _STRING_ESCAPES:
            out.append(_STRING_ESCAPES[e])
            j += 2
        elif e in ("x", "u", "U"):
            size = {"x": 2, "u": 4, "U": 8}[e]
            digits = text[j + 2 : j + 2 + size]
            if len(digits) != size or not all(d in "0123456789abcdefABCDEF" for d in digits):
                raise src.error("bad escape in quoted string", j)
            code = int(digits, 16)
            if e == "x":
                out.append(code)
            elif code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                raise src.error("bad escape in quoted string", j)
            else:
                out += chr(code).encode("utf-8")
            j += 2 + size
        elif e in "01234567" and e and re.fullmatch(r"[0-7]{3}", text[j + 1 : j + 4]):
            code = int(text[j + 1 : j + 4], 8)
            if code > 255:
                raise src.error("bad escape in quoted string", j)
            out.append(code)
            j += 4
        else:
            raise src.error("bad escape in quoted string", j)


# --- parsing into closures --------------------------------------------------------------


class _State:
    """One render: the data, the current dot, variables and the limits' counters."""

    __slots__ = ("dot", "limit", "root", "size", "steps", "vars")

    def __init__(self, root: TemplateContext, slots: int, limit: int) -> None:
        self.root = root
        self.dot: Any = root
        self.vars: list[Any] = [None] * slots if slots else _NO_VARS
        self.steps = 0
        self.size = 0
        self.limit = limit


_NO_VARS: list[Any] = []
_Run = Callable[[_State], Any]
_Piped = Callable[[_State, Any], Any]
_Part = str | Callable[[_State], str]
_NO_VALUE = object()


def _const(value: Any) -> _Run:
    return lambda st: value


def _get_root(st: _State) -> Any:
    return st.root


def _get_dot(st: _State) -> Any:
    return st.dot


def _call(fn: Callable[..., Any], args: Sequence[_Run], piped: bool) -> Any:
    """A call whose arguments are evaluated per render; a piped value comes last."""
    if not piped:
        if not args:
            return lambda st: fn()
        if len(args) == 1:
            (a,) = args
            return lambda st: fn(a(st))
        if len(args) == 2:
            a, b = args
            return lambda st: fn(a(st), b(st))
        return lambda st: fn(*[arg(st) for arg in args])
    if not args:
        return lambda st, value: fn(value)
    if len(args) == 1:
        (a,) = args
        return lambda st, value: fn(a(st), value)
    return lambda st, value: fn(*[arg(st) for arg in args], value)


def _chain_getters(getters: Sequence[Callable[[Any], Any]], base: _Run) -> _Run:
    if not getters:
        return base
    if len(getters) == 1:
        (g,) = getters
        return lambda st: g(base(st))
    if len(getters) == 2:
        g1, g2 = getters
        return lambda st: g2(g1(base(st)))

    def run(st: _State) -> Any:
        value = base(st)
        for getter in getters:
            value = getter(value)
        return value

    return run


def _dynamic_field(name: str) -> Callable[[Any], Any]:
    def get(obj: Any) -> Any:
        if type(obj) is dict:
            return obj.get(name)
        return _field(obj, name)

    return get


@dataclass(slots=True)
class _Word:
    """One operand of a command, before it is compiled."""

    kind: str  # func, nil, literal, value
    pos: int
    name: str = ""
    base: _Run | None = None
    static: object = _DYNAMIC
    chain: list[str] = field(default_factory=list)
    literal: Any = None


class _Cursor:
    def __init__(self, src: _Source, tokens: list[_Token], end: int) -> None:
        self.src = src
        self.tokens = tokens
        self.i = 0
        self.end = end

    def peek(self) -> _Token | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def next(self) -> _Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def skip_space(self) -> None:
        while self.i < len(self.tokens) and self.tokens[self.i].kind == "space":
            self.i += 1

    def pos(self) -> int:
        token = self.peek()
        return token.pos if token is not None else self.end

    def expect_end(self, what: str) -> None:
        self.skip_space()
        token = self.peek()
        if token is not None:
            raise self.src.error(f"unexpected {_describe(token)} in {what}", token.pos)


def _describe(token: _Token) -> str:
    if token.kind in ("field", "var", "ident"):
        return f'"{token.value}"' if token.kind != "field" else f'".{token.value}"'
    if token.kind in ("string", "number", "bool"):
        return f"{token.kind} {token.value!r}"
    return f'"{token.kind}"'


def _suggest(name: str, choices: Iterable[str]) -> str:
    choices = list(choices)
    folded = [c for c in choices if c.lower() == name.lower()]
    close = folded or difflib.get_close_matches(name, choices, n=1)
    return f' (did you mean "{close[0]}"?)' if close else ""


class _Compiler:
    def __init__(self, src: _Source, json: bool) -> None:
        self.src = src
        # In JSON mode, whether the text so far is inside a JSON string, and whether
        # some block left it differently than it found it (then the mode is dropped).
        self.json = json
        self.json_state = _JSON_OUT
        self.json_mixed = False
        self.items = _segments(src)
        self.i = 0
        self.scopes: list[dict[str, int]] = [{}]
        self.slots = 0
        # The static kind of dot, and whether dot is still the root.
        self.dots: list[tuple[object, bool]] = [(TemplateContext, True)]
        self.depth = 0

    # structure

    def parse_list(self) -> tuple[list[_Part], tuple[str, _Cursor, int] | None]:
        parts: list[_Part] = []
        while self.i < len(self.items):
            kind, value, pos = self.items[self.i]
            self.i += 1
            if kind == "text":
                parts.append(value)
                if self.json:
                    self.json_state = _scan_json(value, self.json_state)
                continue
            cur = _Cursor(self.src, value, pos)
            cur.skip_space()
            first = cur.peek()
            if first is None:
                raise self.src.error("missing value for command", pos)
            if first.kind == "ident" and first.value in _UNSUPPORTED_WORDS:
                raise self.src.error(f'"{first.value}" is not supported', first.pos)
            if first.kind == "ident" and first.value in _CONTROL_WORDS:
                cur.next()
                if first.value in ("end", "else"):
                    return parts, (first.value, cur, first.pos)
                parts.append(self.control(first.value, cur, first.pos))
            else:
                parts.append(self.action(cur))
        return parts, None

    def enter(self, pos: int) -> None:
        self.depth += 1
        if self.depth > _MAX_NESTING:
            raise self.src.error("template nested too deeply", pos)

    def action(self, cur: _Cursor) -> _Part:
        decl, run, static = self.pipeline(cur)
        cur.expect_end("action")
        if decl:
            return self.bind(decl, run)
        if self.json and self.json_state != _JSON_OUT:
            if self.json_state == _JSON_IN_ESCAPE:
                self.json_mixed = True
            return lambda st: _json_inner(_output(run(st)))
        if static is _STR:
            return run
        return lambda st: _output(run(st))

    def bind(self, decl: list[tuple[str, bool, int]], run: _Run) -> _Part:
        (slot,) = self.declare(decl)

        def assign(st: _State) -> str:
            st.vars[slot] = run(st)
            return ""

        return assign

    def declare(self, decl: list[tuple[str, bool, int]]) -> list[int]:
        slots = []
        for name, is_new, pos in decl:
            if is_new:
                slots.append(self.slots)
                self.scopes[-1][name] = self.slots
                self.slots += 1
            else:
                slots.append(self.lookup(name, pos))
        return slots

    def lookup(self, name: str, pos: int) -> int:
        for scope in reversed(self.scopes):
            if name in scope:
                return scope[name]
        raise self.src.error(f"undefined variable {name}", pos)

    def control(self, word: str, cur: _Cursor, pos: int) -> _Part:
        self.enter(pos)
        self.scopes.append({})
        try:
            if word == "if":
                return self.if_(cur, pos)
            if word == "with":
                return self.with_(cur, pos)
            return self.range_(cur, pos)
        finally:
            self.scopes.pop()
            self.depth -= 1

    def checked(self, decl: list[tuple[str, bool, int]], run: _Run, pos: int) -> _Run:
        if not decl:
            return run
        if len(decl) > 1:
            raise self.src.error("only range declares two variables", pos)
        (slot,) = self.declare(decl)

        def set_and_return(st: _State) -> Any:
            value = st.vars[slot] = run(st)
            return value

        return set_and_return

    def if_(self, cur: _Cursor, pos: int) -> _Part:
        decl, run, _ = self.pipeline(cur)
        cur.expect_end("{{if}}")
        cond = self.checked(decl, run, pos)
        entry = self.json_state
        body, term = self.parse_list()
        then, otherwise = self.block_after(body, term, "if", pos, entry)

        def run_if(st: _State) -> str:
            if _truth(cond(st)):
                return then(st)  # type: ignore[no-any-return]
            return otherwise(st) if otherwise is not None else ""

        return run_if

    def with_(self, cur: _Cursor, pos: int) -> _Part:
        decl, run, static = self.pipeline(cur)
        cur.expect_end("{{with}}")
        value_of = self.checked(decl, run, pos)
        self.dots.append((static if static in _TABLES else _DYNAMIC, False))
        entry = self.json_state
        try:
            body, term = self.parse_list()
        finally:
            self.dots.pop()
        then, otherwise = self.block_after(body, term, "with", pos, entry)

        def run_with(st: _State) -> str:
            value = value_of(st)
            if not _truth(value):
                return otherwise(st) if otherwise is not None else ""
            saved = st.dot
            st.dot = value
            out: str = then(st)
            st.dot = saved
            return out

        return run_with

    def range_(self, cur: _Cursor, pos: int) -> _Part:
        decl, seq, _ = self.pipeline(cur, allow_two=True)
        cur.expect_end("{{range}}")
        slots = self.declare(decl)
        key_slot = slots[0] if len(slots) == 2 else None
        value_slot = slots[-1] if slots else None
        self.dots.append((_DYNAMIC, False))
        entry = self.json_state
        try:
            body, term = self.parse_list()
        finally:
            self.dots.pop()
        then, otherwise = self.block_after(body, term, "range", pos, entry)

        def run_range(st: _State) -> str:
            items = _iterate(seq(st))
            if not items:
                return otherwise(st) if otherwise is not None else ""
            saved = st.dot
            out = []
            for key, value in items:
                st.steps += 1
                if st.steps > MAX_RANGE_STEPS:
                    raise TemplateRenderError(f"range went past {MAX_RANGE_STEPS} iterations")
                if key_slot is not None:
                    st.vars[key_slot] = key
                if value_slot is not None:
                    st.vars[value_slot] = value
                st.dot = value
                part = then(st)
                st.size += len(part)
                if st.size > st.limit:
                    raise TemplateRenderError(f"output went past {st.limit} characters")
                out.append(part)
            st.dot = saved
            return "".join(out)

        return run_range

    def settle(self, entry: int) -> None:
        """Every branch of a block must leave the JSON text as it found it."""
        if self.json_state != entry:
            self.json_mixed = True
        self.json_state = entry

    def block_after(
        self,
        body: list[_Part],
        term: tuple[str, _Cursor, int] | None,
        what: str,
        pos: int,
        entry: int,
    ) -> tuple[_Run, _Run | None]:
        if term is None:
            raise self.src.error(f"missing {{{{end}}}} for {what}", pos)
        self.settle(entry)
        word, cur, term_pos = term
        if word == "end":
            cur.expect_end("{{end}}")
            return _joined(body), None
        cur.skip_space()
        token = cur.peek()
        if what == "if" and token is not None and token.kind == "ident" and token.value == "if":
            # {{else if}} is an if inside the else, closed by the same {{end}}.
            cur.next()
            return _joined(body), _as_run(self.control("if", cur, token.pos))
        cur.expect_end("{{else}}")
        otherwise, term = self.parse_list()
        if term is None or term[0] != "end":
            where = term[2] if term is not None else term_pos
            raise self.src.error(f"expected {{{{end}}}} after {{{{else}}}} of {what}", where)
        self.settle(entry)
        term[1].expect_end("{{end}}")
        return _joined(body), _joined(otherwise)

    # pipelines

    def declaration(self, cur: _Cursor, allow_two: bool) -> list[tuple[str, bool, int]]:
        start = cur.i
        names: list[tuple[str, int]] = []
        while True:
            cur.skip_space()
            token = cur.peek()
            if token is None or token.kind != "var" or token.value == "$":
                break
            cur.next()
            names.append((token.value, token.pos))
            cur.skip_space()
            after = cur.peek()
            if after is not None and after.kind in (":=", "="):
                cur.next()
                if len(names) == 2 and after.kind == "=":
                    break
                return [(name, after.kind == ":=", p) for name, p in names]
            if after is not None and after.kind == "," and allow_two and len(names) == 1:
                cur.next()
                continue
            break
        cur.i = start
        return []

    def pipeline(
        self, cur: _Cursor, allow_two: bool = False
    ) -> tuple[list[tuple[str, bool, int]], _Run, object]:
        decl = self.declaration(cur, allow_two)
        first, static = self.command(cur, piped=False)
        rest: list[_Piped] = []
        while True:
            cur.skip_space()
            token = cur.peek()
            if token is None or token.kind != "|":
                break
            cur.next()
            piped, static = self.command(cur, piped=True)
            rest.append(piped)
        if not rest:
            return decl, first, static

        def run(st: _State) -> Any:
            value = first(st)
            for command in rest:
                value = command(st, value)
            return value

        return decl, run, static

    def command(self, cur: _Cursor, piped: bool) -> tuple[Any, object]:
        words: list[_Word] = []
        while True:
            cur.skip_space()
            token = cur.peek()
            if token is None or token.kind in ("|", ")"):
                break
            words.append(self.operand(cur))
            token = cur.peek()
            if token is not None and token.kind not in ("space", "|", ")"):
                raise self.src.error(f"unexpected {_describe(token)} in operand", token.pos)
        if not words:
            raise self.src.error("missing value for command", cur.pos())
        return self.compile_command(words, piped)

    def operand(self, cur: _Cursor) -> _Word:
        token = cur.next()
        kind = token.kind
        word: _Word
        if kind == "ident":
            name = token.value
            if name in _CONTROL_WORDS or name in _UNSUPPORTED_WORDS:
                raise self.src.error(f'unexpected "{name}" in command', token.pos)
            if name not in _FUNCTIONS and name not in _SPECIAL_FUNCTIONS:
                hint = _suggest(name, _KNOWN_NAMES)
                raise self.src.error(f'unsupported function "{name}"{hint}', token.pos)
            word = _Word("func", token.pos, name=name)
        elif kind in ("dot", "field"):
            static, is_root = self.dots[-1]
            word = _Word("value", token.pos, base=_get_root if is_root else _get_dot, static=static)
            if kind == "field":
                word.chain.append(token.value)
        elif kind == "var":
            if token.value == "$":
                word = _Word("value", token.pos, base=_get_root, static=TemplateContext)
            else:
                slot = self.lookup(token.value, token.pos)
                word = _Word("value", token.pos, base=lambda st: st.vars[slot])
        elif kind == "(":
            self.enter(token.pos)
            decl, run, static = self.pipeline(cur)
            self.depth -= 1
            if decl:
                raise self.src.error("declarations in parentheses are not supported", token.pos)
            cur.skip_space()
            close = cur.peek()
            if close is None or close.kind != ")":
                raise self.src.error("unclosed left paren", token.pos)
            cur.next()
            word = _Word("value", token.pos, base=run, static=static)
        elif kind in ("string", "number", "bool"):
            word = _Word("literal", token.pos, base=_const(token.value), static=_LEAF)
            word.literal = token.value
        elif kind == "nil":
            word = _Word("nil", token.pos, base=_const(None), static=_LEAF)
        else:
            raise self.src.error(f"unexpected {_describe(token)} in operand", token.pos)
        while (after := cur.peek()) is not None and after.kind == "field":
            if word.kind != "value":
                raise self.src.error(f'unexpected ".{after.value}" after term', after.pos)
            word.chain.append(cur.next().value)
        return word

    # compiling

    def walk(self, word: _Word, names: Sequence[str]) -> tuple[_Run, object]:
        """The value of `word`'s base followed by the fields `names`, checked where known."""
        assert word.base is not None
        static = word.static
        getters: list[Callable[[Any], Any]] = []
        # Plain fields from the root or dot: one C-level attrgetter for the leading run.
        attrs: list[str] = []
        prefix = "root" if word.base is _get_root else "dot" if word.base is _get_dot else None
        collecting = prefix is not None
        for name in names:
            table = _TABLES.get(static) if isinstance(static, type) else None
            if table is not None:
                member = table.get(name)
                if member is None:
                    if static in (HeaderView, QueryValues):
                        getters.append(_dynamic_field(name))
                        static = _LEAF
                        collecting = False
                        continue
                    hint = _suggest(name, table)
                    raise self.src.error(
                        f'unknown field "{name}" of {_TYPE_NAMES[static]}{hint}', word.pos
                    )
                if member.arity:
                    raise self.src.error(
                        f"{name} takes {member.arity} argument(s), given none", word.pos
                    )
                if collecting and member.attr is not None:
                    attrs.append(member.attr)
                else:
                    collecting = False
                getters.append(member.fn)
                static = member.result
            elif static in _PLAIN:
                raise self.src.error(f'cannot take field "{name}" of a plain value', word.pos)
            else:
                collecting = False
                getters.append(_dynamic_field(name))
        if attrs:
            lead: _Run = attrgetter(".".join([prefix or "", *attrs]))
            return _chain_getters(getters[len(attrs) :], lead), static
        return _chain_getters(getters, word.base), static

    def argument(self, word: _Word) -> _Run:
        return self.typed_argument(word)[0]

    def typed_argument(self, word: _Word) -> tuple[_Run, object]:
        if word.kind == "func":
            run: _Run = self.function(word.name, [], False, word.pos)
            return run, _STR if word.name in _STR_FUNCTIONS else _DYNAMIC
        if word.kind == "nil":
            return _const(None), _LEAF
        return self.walk(word, word.chain)

    def compile_command(self, words: list[_Word], piped: bool) -> tuple[Any, object]:
        first, args = words[0], words[1:]
        if first.kind == "func":
            static = _STR if first.name in _STR_FUNCTIONS else _DYNAMIC
            return self.function(first.name, args, piped, first.pos), static
        if first.kind == "nil":
            raise self.src.error("nil is not a command", first.pos)
        if not args and not piped:
            return self.walk(first, first.chain)
        if first.kind != "value" or not first.chain:
            raise self.src.error(
                "cannot give arguments to a value that is not a function", first.pos
            )
        return self.method(first, [self.argument(a) for a in args], piped)

    def method(self, word: _Word, args: list[_Run], piped: bool) -> tuple[Any, object]:
        name = word.chain[-1]
        base, static = self.walk(word, word.chain[:-1])
        count = len(args) + piped
        table = _TABLES.get(static) if isinstance(static, type) else None
        if table is not None:
            member = table.get(name)
            if member is None and static in (HeaderView, QueryValues):
                raise self.src.error(f'"{name}" is a key, not a method', word.pos)
            if member is None:
                hint = _suggest(name, table)
                raise self.src.error(
                    f'unknown field "{name}" of {_TYPE_NAMES[static]}{hint}', word.pos
                )
            if not member.arity:
                raise self.src.error(f'"{name}" is a field, not a method', word.pos)
            if member.arity != count:
                raise self.src.error(
                    f"{name} takes {member.arity} argument(s), given {count}", word.pos
                )
            return _call(member.fn, [base, *args], piped), member.result
        if static in _PLAIN:
            raise self.src.error(f'cannot call "{name}" on a plain value', word.pos)
        return _call(lambda obj, *a: _call_method(obj, name, a), [base, *args], piped), _DYNAMIC

    def function(self, name: str, words: list[_Word], piped: bool, pos: int) -> Any:
        count = len(words) + piped
        if name == "printf":
            return self.printf(words, piped, pos)
        if name in ("and", "or"):
            if count < 1:
                raise self.src.error(f"{name} takes at least 1 argument", pos)
            return _logic(name == "and", [self.argument(w) for w in words], piped)
        fn, fewest, most = _FUNCTIONS[name]
        if name == "print" and count == 1 and not piped:
            run, static = self.typed_argument(words[0])
            if static is _STR:
                return run
        if count < fewest or (most is not None and count > most):
            if name == "print":
                raise self.src.error(
                    "print takes exactly 1 argument (Oathkeeper's print); use printf", pos
                )
            want = str(fewest) if fewest == most else f"{fewest} or more"
            if most is not None and most != fewest:
                want = f"{fewest} to {most}"
            raise self.src.error(f"{name} takes {want} argument(s), given {count}", pos)
        return _call(fn, [self.argument(w) for w in words], piped)

    def printf(self, words: list[_Word], piped: bool, pos: int) -> Any:
        if not words or words[0].kind != "literal" or type(words[0].literal) is not str:
            raise self.src.error("printf needs a quoted string as its format", pos)
        pieces = _parse_format(words[0].literal)
        if isinstance(pieces, str):
            raise self.src.error(pieces, words[0].pos)
        args = [self.argument(w) for w in words[1:]]

        def sprintf(*values: Any) -> str:
            out = _sprintf(pieces, values)
            if len(out) > MAX_OUTPUT:
                raise TemplateRenderError(f"printf went past {MAX_OUTPUT} characters")
            return out

        return _call(sprintf, args, piped)


def _logic(is_and: bool, args: Sequence[_Run], piped: bool) -> Any:
    """Go's and/or: the first falsy (and) or truthy (or) argument, else the last; lazy."""

    def decide(st: _State, final: Any) -> Any:
        value: Any = None
        for arg in args:
            value = arg(st)
            if _truth(value) != is_and:
                return value
        return final if final is not _NO_VALUE else value

    if piped:
        return decide
    return lambda st: decide(st, _NO_VALUE)


def _iterate(value: Any) -> list[tuple[Any, Any]]:
    if isinstance(value, list | tuple):
        return list(enumerate(value))
    as_map = _known_as_map(value)
    if as_map is not None:
        value = as_map
    if isinstance(value, Mapping):
        return [(key, value[key]) for key in sorted(value, key=_sort_key)]
    return []


def _joined(parts: list[_Part]) -> _Run:
    return _as_run(_merge(parts))


def _merge(parts: list[_Part]) -> _Part:
    merged: list[_Part] = []
    for part in parts:
        if type(part) is str and merged and type(merged[-1]) is str:
            merged[-1] = merged[-1] + part
        elif part != "":
            merged.append(part)
    if not merged:
        return ""
    if len(merged) == 1:
        return merged[0]
    frozen = tuple(merged)

    def run(st: _State) -> str:
        return "".join([p if isinstance(p, str) else p(st) for p in frozen])

    return run


def _as_run(part: _Part) -> _Run:
    if type(part) is str:
        return _const(part)
    assert callable(part)
    return part


class Template:
    """A compiled template; `render` is safe to call from many threads at once."""

    __slots__ = ("_limit", "_run", "_slots", "constant", "source", "where")

    def __init__(self, source: str, where: str, part: _Part, slots: int, limit: int) -> None:
        self.source = source
        self.where = where
        # Set when the template has no actions: the pipeline can skip rendering.
        self.constant: str | None = part if type(part) is str else None
        self._run = _as_run(part)
        self._slots = slots
        self._limit = limit

    def render(self, context: TemplateContext) -> str:
        if self.constant is not None:
            return self.constant
        out: str = self._run(_State(context, self._slots, self._limit))
        if len(out) > self._limit:
            raise TemplateRenderError(
                f"{self.where or 'template'}: output went past {self._limit} characters"
            )
        return out

    def __repr__(self) -> str:
        return f"Template({self.source!r})"


def compile_template(
    text: str, *, where: str = "", max_output: int = MAX_OUTPUT, json: bool = False
) -> Template:
    """Parse `text` once; raises TemplateError (one line, naming `where`) if unsupported.

    `json=True` is for templates that produce JSON (id_token claims, remote_json
    payloads): what an action prints inside a JSON string is escaped for it, so a
    value holding `"` cannot end the string and add keys. Values without `"`, `\\`
    or control characters print exactly as without it. Where a block's branches leave
    the text inside and outside a string differently, the template is compiled as
    without `json` (Oathkeeper's behaviour).
    """
    if not isinstance(text, str):
        # A YAML rule file turns `X-Count: 5` into a number.
        raise TemplateError(f"{where or 'template'}: must be a string, not {type(text).__name__}")
    src = _Source(text, where)
    compiler = _Compiler(src, json)
    parts, term = compiler.parse_list()
    if term is not None:
        raise src.error(f"unexpected {{{{{term[0]}}}}}", term[2])
    if compiler.json_mixed:
        return compile_template(text, where=where, max_output=max_output)
    return Template(text, where, _merge(parts), compiler.slots, min(max_output, MAX_OUTPUT))
