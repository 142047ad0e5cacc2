"""The session's fixed fields: what `.Subject`, `.MatchContext.URL.Host` and the
header and query methods read, for static checks at load and access per render.

`TABLES` lists each known class's members; no attribute is read by a name the rule
file gives. The compiler follows each operand's static kind: a known class, any data
(`DYNAMIC`) or a value without fields (`LEAF`, `STR`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ory_wsgi.rules.template.context import (
    HeaderView,
    MatchContext,
    QueryValues,
    RequestURL,
    TemplateContext,
)
from ory_wsgi.rules.template.functions import index_one


class _Kind:
    """Static kinds next to the known classes: any data, or a value without fields."""

    def __init__(self, name: str) -> None:
        self.name = name


DYNAMIC = _Kind("data")
LEAF = _Kind("value")
STR = _Kind("string")
PLAIN = (LEAF, STR)


@dataclass(frozen=True, slots=True)
class _Member:
    fn: Callable[..., Any]
    arity: int
    result: object
    # The Python attribute behind a plain field, for one attrgetter over a whole chain.
    attr: str | None = None


def _string_arg(method: Callable[[Any, str], Any]) -> Callable[[Any, Any], Any]:
    return lambda obj, key: method(obj, key) if type(key) is str else None


TABLES: dict[type, dict[str, _Member]] = {
    TemplateContext: {
        "Subject": _Member(lambda o: o.subject, 0, STR, "subject"),
        "Extra": _Member(lambda o: o.extra, 0, DYNAMIC, "extra"),
        "Header": _Member(lambda o: HeaderView(o.header), 0, HeaderView),
        "MatchContext": _Member(lambda o: o.match, 0, MatchContext, "match"),
    },
    MatchContext: {
        "RegexpCaptureGroups": _Member(
            lambda o: o.regexp_capture_groups, 0, LEAF, "regexp_capture_groups"
        ),
        "URL": _Member(lambda o: o.url, 0, RequestURL, "url"),
        "Method": _Member(lambda o: o.method, 0, STR, "method"),
        "Header": _Member(lambda o: HeaderView(o.header), 0, HeaderView),
    },
    RequestURL: {
        "Scheme": _Member(lambda o: o.scheme, 0, STR, "scheme"),
        "Opaque": _Member(lambda o: "", 0, STR),
        "Host": _Member(lambda o: o.host, 0, STR, "host"),
        "Path": _Member(lambda o: o.path, 0, STR, "path"),
        "RawPath": _Member(lambda o: o.raw_path, 0, STR, "raw_path"),
        "RawQuery": _Member(lambda o: o.raw_query, 0, STR, "raw_query"),
        "Fragment": _Member(lambda o: o.fragment, 0, STR, "fragment"),
        "Query": _Member(lambda o: o.query(), 0, QueryValues),
        "Hostname": _Member(lambda o: o.hostname(), 0, STR),
        "Port": _Member(lambda o: o.port(), 0, STR),
        "EscapedPath": _Member(lambda o: o.escaped_path(), 0, STR),
        "RequestURI": _Member(lambda o: o.request_uri(), 0, STR),
        "String": _Member(str, 0, STR),
        "IsAbs": _Member(lambda o: bool(o.scheme), 0, LEAF),
    },
    HeaderView: {
        "Get": _Member(_string_arg(HeaderView.get), 1, STR),
        "Values": _Member(_string_arg(HeaderView.values), 1, LEAF),
    },
    QueryValues: {
        "Get": _Member(_string_arg(QueryValues.get), 1, STR),
        "Has": _Member(_string_arg(QueryValues.has), 1, LEAF),
    },
}
TYPE_NAMES: dict[object, str] = {
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
    table = TABLES.get(type(obj))
    if table is not None:
        member = table.get(name)
        if member is None:
            # Go's http.Header and url.Values are maps: other names are keys.
            return index_one(obj, name)
        return member.fn(obj) if member.arity == 0 else None
    if isinstance(obj, Mapping):
        return obj.get(name)
    return None


def call_method(obj: Any, name: str, args: Sequence[Any]) -> Any:
    table = TABLES.get(type(obj))
    member = table.get(name) if table is not None else None
    if member is None or member.arity != len(args):
        return None
    return member.fn(obj, *args)


def dynamic_field(name: str) -> Callable[[Any], Any]:
    def get(obj: Any) -> Any:
        if type(obj) is dict:
            return obj.get(name)
        return _field(obj, name)

    return get
