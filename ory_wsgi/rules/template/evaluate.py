"""What runs per render: the render's state and the closures the compiler assembles.

A compiled template is a tree of these closures; each takes the `State` of one
render (the data, the current dot, variables, the limits' counters).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ory_wsgi.rules.template.context import TemplateContext, known_as_map
from ory_wsgi.rules.template.functions import truth
from ory_wsgi.rules.template.gofmt import sort_key


class State:
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
Run = Callable[[State], Any]
Piped = Callable[[State, Any], Any]
Part = str | Callable[[State], str]
_NO_VALUE = object()


def const(value: Any) -> Run:
    return lambda st: value


def get_root(st: State) -> Any:
    return st.root


def get_dot(st: State) -> Any:
    return st.dot


def call(fn: Callable[..., Any], args: Sequence[Run], piped: bool) -> Any:
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


def chain_getters(getters: Sequence[Callable[[Any], Any]], base: Run) -> Run:
    if not getters:
        return base
    if len(getters) == 1:
        (g,) = getters
        return lambda st: g(base(st))
    if len(getters) == 2:
        g1, g2 = getters
        return lambda st: g2(g1(base(st)))

    def run(st: State) -> Any:
        value = base(st)
        for getter in getters:
            value = getter(value)
        return value

    return run


def logic(is_and: bool, args: Sequence[Run], piped: bool) -> Any:
    """Go's and/or: the first falsy (and) or truthy (or) argument, else the last; lazy."""

    def decide(st: State, final: Any) -> Any:
        value: Any = None
        for arg in args:
            value = arg(st)
            if truth(value) != is_and:
                return value
        return final if final is not _NO_VALUE else value

    if piped:
        return decide
    return lambda st: decide(st, _NO_VALUE)


def iterate(value: Any) -> list[tuple[Any, Any]]:
    if isinstance(value, list | tuple):
        return list(enumerate(value))
    as_map = known_as_map(value)
    if as_map is not None:
        value = as_map
    if isinstance(value, Mapping):
        return [(key, value[key]) for key in sorted(value, key=sort_key)]
    return []


def joined(parts: list[Part]) -> Run:
    return as_run(merge(parts))


def merge(parts: list[Part]) -> Part:
    merged: list[Part] = []
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

    def run(st: State) -> str:
        return "".join([p if isinstance(p, str) else p(st) for p in frozen])

    return run


def as_run(part: Part) -> Run:
    if type(part) is str:
        return const(part)
    assert callable(part)
    return part
