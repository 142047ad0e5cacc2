"""Go's `fmt.Sprintf` for the `printf` function.

`parse_format` splits a format once, when the template loads (argument indexes, `*`
widths and widths above `MAX_WIDTH` are refused there); `go_sprintf` applies the
pieces to the arguments per render, with Go's `%!verb(type=value)` for mismatches.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ory_wsgi.rules.template.context import (
    HeaderView,
    MatchContext,
    QueryValues,
    RequestURL,
    TemplateContext,
    known_as_map,
)
from ory_wsgi.rules.template.gofmt import (
    Absent,
    go_float,
    go_known,
    go_quote,
    go_v,
    output,
    sort_key,
    special_float,
)
from ory_wsgi.rules.template.limits import MAX_DEPTH, MAX_WIDTH


@dataclass(frozen=True, slots=True)
class _Verb:
    flags: str
    width: int | None
    precision: int | None
    verb: str


_VERB_RE = re.compile(r"%([-+# 0]*)(\d+)?(?:\.(\d*))?(.)?", re.DOTALL)


def parse_format(fmt: str) -> tuple[str | _Verb, ...] | str:
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
        if any(n > MAX_WIDTH for n in numbers):
            return f"printf widths and precisions above {MAX_WIDTH} are not supported"
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
    return f"%!{verb}({_go_type(value)}={go_v(value)})"


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
        quoted = go_quote(char, ascii_only="+" in spec.flags)[1:-1]
        return "'" + quoted.replace('\\"', '"').replace("'", "\\'") + "'"
    if verb == "U" and value >= 0:
        return f"U+{value:04X}"
    return _bad_verb(value, verb)


def _format_float(value: float, spec: _Verb) -> str:
    verb = spec.verb
    special = special_float(value) if math.isnan(value) or math.isinf(value) else None
    if special is not None and verb in "eEfFgGv":
        return _signed(special, spec.flags)
    if verb == "v" or (verb in "gG" and spec.precision is None):
        text = go_float(value)
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
        return go_quote(value, ascii_only="+" in spec.flags)
    if verb in ("x", "X"):
        hexed = value.encode("utf-8", "surrogatepass").hex()
        return hexed.upper() if verb == "X" else hexed
    return _bad_verb(value, verb)


def _format_one(value: Any, spec: _Verb, depth: int = 0) -> str:
    """One printf argument; verb, width and flags apply to each element of lists and maps."""
    if depth > MAX_DEPTH:
        raise Absent
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
    as_map = known_as_map(value)
    if as_map is not None:
        value = as_map
    if isinstance(value, Mapping):
        keys = sorted(value, key=sort_key)
        inner = " ".join(
            f"{_format_one(k, spec, depth + 1)}:{_format_one(value[k], spec, depth + 1)}"
            for k in keys
        )
        return f"map[{inner}]"
    if isinstance(value, list | tuple):
        return "[" + " ".join(_format_one(item, spec, depth + 1) for item in value) + "]"
    return go_known(value, depth) if verb in ("s", "v") else _bad_verb(value, verb)


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


def go_sprintf(pieces: tuple[str | _Verb, ...], args: Sequence[Any]) -> str:
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
            except Absent:
                pass
            index += 1
    if index < len(args):
        extra = ", ".join(
            f"{_go_type(arg)}={output(arg)}" if arg is not None else "<nil>" for arg in args[index:]
        )
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)
