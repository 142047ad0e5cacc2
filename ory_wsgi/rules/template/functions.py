"""The functions templates may call: Go's builtins, Oathkeeper's, and Sprig's subset.

`FUNCTIONS` maps a name to (function, fewest arguments, most arguments or None).
`and`, `or` and `printf` are compiled apart (`SPECIAL_FUNCTIONS`). Absent values are
the empty string or nil throughout, as in the rest of the evaluator; `truth` is Go's
truth for `if`, `with`, `and`, `or` and `not`.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import quote_plus

from ory_wsgi.rules.template.context import HeaderView, QueryValues, known_as_map
from ory_wsgi.rules.template.gofmt import Absent, go_quote, output
from ory_wsgi.rules.template.gojson import to_json
from ory_wsgi.rules.template.limits import MAX_DEPTH, MAX_OUTPUT, TemplateRenderError


def truth(value: Any) -> bool:
    """Go's truth: false, 0, "", nil and empty lists and maps are false."""
    if value is None:
        return False
    if type(value) in (str, bool, int, float, list, tuple, dict):
        return bool(value)
    as_map = known_as_map(value)
    if as_map is not None:
        return bool(as_map)
    if isinstance(value, Mapping | list | tuple):
        return len(value) > 0
    return True


def _strval(value: Any) -> str:
    """Sprig's strval, with absent values empty."""
    return output(value)


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
    if depth > MAX_DEPTH:
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
    as_map = known_as_map(value)
    if as_map is not None:
        return len(as_map)
    if isinstance(value, Mapping | list | tuple):
        return len(value)
    return 0


def index_one(value: Any, key: Any) -> Any:
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
        value = index_one(value, key)
    return value


def _fn_print_index(value: Any, position: Any) -> str:
    if isinstance(value, list | tuple) and type(position) is int and 0 <= position < len(value):
        return output(value[position])
    return ""


def _sprint(args: Sequence[Any]) -> str:
    """Go's fmt.Sprint: a space between operands when neither is a string."""
    out: list[str] = []
    for i, arg in enumerate(args):
        if i and type(arg) is not str and type(args[i - 1]) is not str:
            out.append(" ")
        out.append(output(arg))
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
    return not truth(value)


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
    return " ".join(go_quote(_strval(value)) for value in values if value is not None)


def _fn_squote(*values: Any) -> str:
    return " ".join(f"'{_strval(value)}'" for value in values if value is not None)


def _fn_to_json(value: Any) -> str:
    try:
        return to_json(value)
    except Absent:
        return ""


def _strings(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Sprig's string functions take strings: other values are printed first."""

    def call(*args: Any) -> Any:
        return fn(*(_strval(arg) for arg in args))

    return call


# name -> (function, fewest arguments, most arguments or None)
FUNCTIONS: dict[str, tuple[Callable[..., Any], int, int | None]] = {
    # Go's builtins (print is Oathkeeper's: one argument, nil prints nothing)
    "print": (output, 1, 1),
    "index": (_fn_index, 1, None),
    "len": (_fn_len, 1, 1),
    "not": (lambda value: not truth(value), 1, 1),
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
SPECIAL_FUNCTIONS = ("and", "or", "printf")
KNOWN_NAMES = sorted([*FUNCTIONS, *SPECIAL_FUNCTIONS])


# Functions whose result is always a string: printing it again is skipped.
STR_FUNCTIONS = frozenset(
    "print printIndex printf urlquery lower upper trim trimPrefix trimSuffix replace join"
    " quote squote toJson toString b64enc".split()
)
