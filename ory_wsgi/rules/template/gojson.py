"""Go's encoding/json for template values (Sprig's `toJson`), and JSON mode's escaping.

`to_json` is `go_json` through Python's C encoder when that writes what Go writes
(sorted keys, `<`, `>` and `&` escaped), else `go_json` itself. Both raise `Absent`
where Go's Marshal fails (NaN, infinities, data too deep). `json_inner` and
`scan_json` serve the compiler's JSON mode: escaping for the inside of a JSON string,
and whether the text so far ends inside one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from json import JSONEncoder
from typing import Any

from ory_wsgi.rules.template.context import (
    HeaderView,
    MatchContext,
    RequestURL,
    TemplateContext,
    known_as_map,
)
from ory_wsgi.rules.template.gofmt import Absent, go_v, json_float, sort_key
from ory_wsgi.rules.template.limits import MAX_DEPTH


def go_json(value: Any, depth: int = 0) -> str:
    """Go's encoding/json; raises Absent where Go's Marshal fails (sprig then gives "")."""
    out: list[str] = []
    _json_into(value, out, depth)
    return "".join(out)


def _sorted_keys(value: Mapping[Any, Any]) -> list[Any]:
    try:
        return sorted(value)
    except TypeError:
        return sorted(value, key=sort_key)


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
            raise Absent
        out.append(json_float(value))
    elif depth >= MAX_DEPTH:
        raise Absent
    elif kind is dict or isinstance(value, Mapping):
        out.append("{")
        for i, key in enumerate(_sorted_keys(value)):
            if i:
                out.append(",")
            out.append(_json_string(key if type(key) is str else go_v(key)))
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
    as_map = known_as_map(value)
    if as_map is not None:
        return go_json(as_map, depth)
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
        return "{" + ",".join(f'"{k}":{go_json(v, depth + 1)}' for k, v in url.items()) + "}"
    if kind is MatchContext:
        return (
            '{"regexp_capture_groups":'
            + go_json(list(value.regexp_capture_groups), depth + 1)
            + ',"url":'
            + _json_known(value.url, depth + 1)
            + ',"method":'
            + _json_string(value.method)
            + ',"header":'
            + go_json(HeaderView(value.header).as_dict(), depth + 1)
            + "}"
        )
    if kind is TemplateContext:
        return (
            '{"subject":'
            + _json_string(value.subject)
            + ',"extra":'
            + go_json(value.extra, depth + 1)
            + ',"header":'
            + go_json(HeaderView(value.header).as_dict(), depth + 1)
            + ',"match_context":'
            + _json_known(value.match, depth + 1)
            + "}"
        )
    raise Absent


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


def json_inner(text: str) -> str:
    """`text` escaped for the inside of a JSON string (no quotes added)."""
    return _JSON_INNER_RE.sub(_json_escape, text)


JSON_OUT, JSON_IN, JSON_IN_ESCAPE = 0, 1, 2


def scan_json(text: str, state: int) -> int:
    """Whether the JSON text so far ends inside a string (and after a backslash)."""
    for ch in text:
        if state == JSON_IN_ESCAPE:
            state = JSON_IN
        elif state == JSON_IN:
            if ch == "\\":
                state = JSON_IN_ESCAPE
            elif ch == '"':
                state = JSON_OUT
        elif ch == '"':
            state = JSON_IN
    return state


def _not_json(value: Any) -> Any:
    raise TypeError


def to_json(value: Any) -> str:
    """`go_json`, through the C encoder when its output is already Go's."""
    try:
        text = _ENCODER.encode(value)
    except (TypeError, ValueError, RecursionError):
        return go_json(value)
    # Python and Go write floats differently, and Go replaces lone surrogates. A
    # float-like token inside a string only costs the slower path.
    if _FLOAT_TOKEN_RE.search(text) or _SURROGATE_RE.search(text):
        return go_json(value)
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
