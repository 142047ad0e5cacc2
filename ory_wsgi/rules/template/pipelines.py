"""An action's pipeline compiled into closures: commands, operands, field chains,
variables, function and method calls, printf.

Everything that can be checked at load is checked here, with the column: unknown
functions and fields of the session's fixed classes (with a suggestion), arities,
printf formats. `PipelineCompiler` keeps the variable scopes and the static kind of
dot; the block structure around pipelines is `compile._Compiler`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

from ory_wsgi.rules.template.context import HeaderView, QueryValues, TemplateContext
from ory_wsgi.rules.template.evaluate import (
    Piped,
    Run,
    State,
    call,
    chain_getters,
    const,
    get_dot,
    get_root,
    logic,
)
from ory_wsgi.rules.template.fields import (
    DYNAMIC,
    LEAF,
    PLAIN,
    STR,
    TABLES,
    TYPE_NAMES,
    call_method,
    dynamic_field,
)
from ory_wsgi.rules.template.functions import (
    FUNCTIONS,
    KNOWN_NAMES,
    SPECIAL_FUNCTIONS,
    STR_FUNCTIONS,
)
from ory_wsgi.rules.template.limits import MAX_NESTING, MAX_OUTPUT, TemplateRenderError
from ory_wsgi.rules.template.parse import (
    CONTROL_WORDS,
    UNSUPPORTED_WORDS,
    Cursor,
    Source,
    describe,
    suggest,
)
from ory_wsgi.rules.template.printf import go_sprintf, parse_format


@dataclass(slots=True)
class _Word:
    """One operand of a command, before it is compiled."""

    kind: str  # func, nil, literal, value
    pos: int
    name: str = ""
    base: Run | None = None
    static: object = DYNAMIC
    chain: list[str] = field(default_factory=list)
    literal: Any = None


class PipelineCompiler:
    """Compiles pipelines, and keeps what they share with the blocks around them:
    variable scopes and slots, the static kind of dot, the nesting depth."""

    def __init__(self, src: Source) -> None:
        self.src = src
        self.scopes: list[dict[str, int]] = [{}]
        self.slots = 0
        # The static kind of dot, and whether dot is still the root.
        self.dots: list[tuple[object, bool]] = [(TemplateContext, True)]
        self.depth = 0

    # scopes

    def enter(self, pos: int) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise self.src.error("template nested too deeply", pos)

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

    # pipelines

    def declaration(self, cur: Cursor, allow_two: bool) -> list[tuple[str, bool, int]]:
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
        self, cur: Cursor, allow_two: bool = False
    ) -> tuple[list[tuple[str, bool, int]], Run, object]:
        decl = self.declaration(cur, allow_two)
        first, static = self.command(cur, piped=False)
        rest: list[Piped] = []
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

        def run(st: State) -> Any:
            value = first(st)
            for command in rest:
                value = command(st, value)
            return value

        return decl, run, static

    def command(self, cur: Cursor, piped: bool) -> tuple[Any, object]:
        words: list[_Word] = []
        while True:
            cur.skip_space()
            token = cur.peek()
            if token is None or token.kind in ("|", ")"):
                break
            words.append(self.operand(cur))
            token = cur.peek()
            if token is not None and token.kind not in ("space", "|", ")"):
                raise self.src.error(f"unexpected {describe(token)} in operand", token.pos)
        if not words:
            raise self.src.error("missing value for command", cur.pos())
        return self.compile_command(words, piped)

    def operand(self, cur: Cursor) -> _Word:
        token = cur.next()
        kind = token.kind
        word: _Word
        if kind == "ident":
            name = token.value
            if name in CONTROL_WORDS or name in UNSUPPORTED_WORDS:
                raise self.src.error(f'unexpected "{name}" in command', token.pos)
            if name not in FUNCTIONS and name not in SPECIAL_FUNCTIONS:
                hint = suggest(name, KNOWN_NAMES)
                raise self.src.error(f'unsupported function "{name}"{hint}', token.pos)
            word = _Word("func", token.pos, name=name)
        elif kind in ("dot", "field"):
            static, is_root = self.dots[-1]
            word = _Word("value", token.pos, base=get_root if is_root else get_dot, static=static)
            if kind == "field":
                word.chain.append(token.value)
        elif kind == "var":
            if token.value == "$":
                word = _Word("value", token.pos, base=get_root, static=TemplateContext)
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
            word = _Word("literal", token.pos, base=const(token.value), static=LEAF)
            word.literal = token.value
        elif kind == "nil":
            word = _Word("nil", token.pos, base=const(None), static=LEAF)
        else:
            raise self.src.error(f"unexpected {describe(token)} in operand", token.pos)
        while (after := cur.peek()) is not None and after.kind == "field":
            if word.kind != "value":
                raise self.src.error(f'unexpected ".{after.value}" after term', after.pos)
            word.chain.append(cur.next().value)
        return word

    # compiling

    def walk(self, word: _Word, names: Sequence[str]) -> tuple[Run, object]:
        """The value of `word`'s base followed by the fields `names`, checked where known."""
        assert word.base is not None
        static = word.static
        getters: list[Callable[[Any], Any]] = []
        # Plain fields from the root or dot: one C-level attrgetter for the leading run.
        attrs: list[str] = []
        prefix = "root" if word.base is get_root else "dot" if word.base is get_dot else None
        collecting = prefix is not None
        for name in names:
            table = TABLES.get(static) if isinstance(static, type) else None
            if table is not None:
                member = table.get(name)
                if member is None:
                    if static in (HeaderView, QueryValues):
                        getters.append(dynamic_field(name))
                        static = LEAF
                        collecting = False
                        continue
                    hint = suggest(name, table)
                    raise self.src.error(
                        f'unknown field "{name}" of {TYPE_NAMES[static]}{hint}', word.pos
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
            elif static in PLAIN:
                raise self.src.error(f'cannot take field "{name}" of a plain value', word.pos)
            else:
                collecting = False
                getters.append(dynamic_field(name))
        if attrs:
            lead: Run = attrgetter(".".join([prefix or "", *attrs]))
            return chain_getters(getters[len(attrs) :], lead), static
        return chain_getters(getters, word.base), static

    def argument(self, word: _Word) -> Run:
        return self.typed_argument(word)[0]

    def typed_argument(self, word: _Word) -> tuple[Run, object]:
        if word.kind == "func":
            run: Run = self.function(word.name, [], False, word.pos)
            return run, STR if word.name in STR_FUNCTIONS else DYNAMIC
        if word.kind == "nil":
            return const(None), LEAF
        return self.walk(word, word.chain)

    def compile_command(self, words: list[_Word], piped: bool) -> tuple[Any, object]:
        first, args = words[0], words[1:]
        if first.kind == "func":
            static = STR if first.name in STR_FUNCTIONS else DYNAMIC
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

    def method(self, word: _Word, args: list[Run], piped: bool) -> tuple[Any, object]:
        name = word.chain[-1]
        base, static = self.walk(word, word.chain[:-1])
        count = len(args) + piped
        table = TABLES.get(static) if isinstance(static, type) else None
        if table is not None:
            member = table.get(name)
            if member is None and static in (HeaderView, QueryValues):
                raise self.src.error(f'"{name}" is a key, not a method', word.pos)
            if member is None:
                hint = suggest(name, table)
                raise self.src.error(
                    f'unknown field "{name}" of {TYPE_NAMES[static]}{hint}', word.pos
                )
            if not member.arity:
                raise self.src.error(f'"{name}" is a field, not a method', word.pos)
            if member.arity != count:
                raise self.src.error(
                    f"{name} takes {member.arity} argument(s), given {count}", word.pos
                )
            return call(member.fn, [base, *args], piped), member.result
        if static in PLAIN:
            raise self.src.error(f'cannot call "{name}" on a plain value', word.pos)
        return call(lambda obj, *a: call_method(obj, name, a), [base, *args], piped), DYNAMIC

    def function(self, name: str, words: list[_Word], piped: bool, pos: int) -> Any:
        count = len(words) + piped
        if name == "printf":
            return self.printf(words, piped, pos)
        if name in ("and", "or"):
            if count < 1:
                raise self.src.error(f"{name} takes at least 1 argument", pos)
            return logic(name == "and", [self.argument(w) for w in words], piped)
        fn, fewest, most = FUNCTIONS[name]
        if name == "print" and count == 1 and not piped:
            run, static = self.typed_argument(words[0])
            if static is STR:
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
        return call(fn, [self.argument(w) for w in words], piped)

    def printf(self, words: list[_Word], piped: bool, pos: int) -> Any:
        if not words or words[0].kind != "literal" or type(words[0].literal) is not str:
            raise self.src.error("printf needs a quoted string as its format", pos)
        pieces = parse_format(words[0].literal)
        if isinstance(pieces, str):
            raise self.src.error(pieces, words[0].pos)
        args = [self.argument(w) for w in words[1:]]

        def sprintf(*values: Any) -> str:
            out = go_sprintf(pieces, values)
            if len(out) > MAX_OUTPUT:
                raise TemplateRenderError(f"printf went past {MAX_OUTPUT} characters")
            return out

        return call(sprintf, args, piped)
