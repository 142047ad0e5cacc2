"""Go's fmt printing of template values: what `{{ .X }}` and `print` write.

`output` is what an action prints (absent and null print nothing); `go_v` is Go's
`%v` inside a structure (`[a b]`, `map[k:v]`, `<nil>`). Floats are written as Go's
strconv writes them, with fmt's cutoffs (`go_float`) and encoding/json's
(`json_float`). Data deeper than `MAX_DEPTH` raises `Absent`: the value prints as
absent.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from ory_wsgi.rules.template.context import (
    HeaderView,
    MatchContext,
    RequestURL,
    TemplateContext,
    known_as_map,
)
from ory_wsgi.rules.template.limits import MAX_DEPTH


class Absent(Exception):
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


def special_float(value: float) -> str | None:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    return None


def go_float(value: float) -> str:
    """Go's `%v` of a float64: shortest digits, `e` form from 1e+06 and below 1e-04."""
    special = special_float(value)
    if special is not None:
        return special
    sign, digits, point = _shortest(value)
    if point - 1 < -4 or point - 1 >= 6:
        return _exp(sign, digits, point)
    return _plain(sign, digits, point)


def json_float(value: float) -> str:
    """Go's encoding/json for a float64 (`e` form below 1e-6 and from 1e21)."""
    if value == 0:
        return "0" if math.copysign(1.0, value) > 0 else "-0"
    sign, digits, point = _shortest(value)
    if abs(value) < 1e-6 or abs(value) >= 1e21:
        text = _exp(sign, digits, point)
        return re.sub(r"e-0(\d)$", r"e-\1", text)
    return _plain(sign, digits, point)


def go_quote(text: str, ascii_only: bool = False) -> str:
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


def go_v(value: Any, depth: int = 0) -> str:
    """Go's `%v` of a value inside a structure (`<nil>` for nil, as fmt prints it)."""
    if depth > MAX_DEPTH:
        raise Absent
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
        return go_float(value)
    if isinstance(value, Mapping):
        return _go_map(value, depth)
    if isinstance(value, list | tuple):
        return "[" + " ".join(go_v(item, depth + 1) for item in value) + "]"
    return go_known(value, depth)


def _go_map(value: Mapping[Any, Any], depth: int) -> str:
    keys = sorted(value, key=sort_key)
    inner = " ".join(f"{go_v(k, depth + 1)}:{go_v(value[k], depth + 1)}" for k in keys)
    return f"map[{inner}]"


def sort_key(key: Any) -> tuple[int, Any]:
    # Go sorts a map's keys by value; JSON objects have string keys only.
    return (0, key) if isinstance(key, str) else (1, repr(key))


def go_known(value: Any, depth: int) -> str:
    as_map = known_as_map(value)
    if as_map is not None:
        return _go_map(as_map, depth)
    kind = type(value)
    if kind is RequestURL:
        return str(value)
    if kind is MatchContext:
        parts = (
            go_v(list(value.regexp_capture_groups), depth + 1),
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
            go_known(value.match, depth + 1),
        )
        return "&{" + " ".join(parts) + "}"
    # Anything else is not template data: it is not asked to describe itself.
    return ""


def output(value: Any) -> str:
    """What an action prints: absent and null print nothing, the rest as Go's `%v`."""
    if type(value) is str:
        return value
    if value is None:
        return ""
    try:
        return go_v(value)
    except Absent:
        return ""
