"""A template's text compiled into a `Template`: text, actions and blocks.

`_Compiler` adds the structure around pipelines (`if`, `with`, `range`, `else`,
`end`, variable scopes per block) and JSON mode's tracking of whether the text so far
is inside a JSON string. `compile_template` is the entry point; `Template.render`
runs the closures with a fresh `State` per render.
"""

from __future__ import annotations

from typing import Any

from ory_wsgi.rules.template.context import TemplateContext
from ory_wsgi.rules.template.evaluate import Part, Run, State, as_run, iterate, joined, merge
from ory_wsgi.rules.template.fields import DYNAMIC, STR, TABLES
from ory_wsgi.rules.template.functions import truth
from ory_wsgi.rules.template.gofmt import output
from ory_wsgi.rules.template.gojson import (
    JSON_IN_ESCAPE,
    JSON_OUT,
    json_inner,
    scan_json,
)
from ory_wsgi.rules.template.limits import MAX_OUTPUT, MAX_RANGE_STEPS, TemplateRenderError
from ory_wsgi.rules.template.parse import (
    CONTROL_WORDS,
    UNSUPPORTED_WORDS,
    Cursor,
    Source,
    TemplateError,
    segments,
)
from ory_wsgi.rules.template.pipelines import PipelineCompiler


class _Compiler(PipelineCompiler):
    """The whole template: text and actions in order, blocks, JSON mode."""

    def __init__(self, src: Source, json: bool) -> None:
        super().__init__(src)
        # In JSON mode, whether the text so far is inside a JSON string, and whether
        # some block left it differently than it found it (then the mode is dropped).
        self.json = json
        self.json_state = JSON_OUT
        self.json_mixed = False
        self.items = segments(src)
        self.i = 0

    # structure

    def parse_list(self) -> tuple[list[Part], tuple[str, Cursor, int] | None]:
        parts: list[Part] = []
        while self.i < len(self.items):
            kind, value, pos = self.items[self.i]
            self.i += 1
            if kind == "text":
                parts.append(value)
                if self.json:
                    self.json_state = scan_json(value, self.json_state)
                continue
            cur = Cursor(self.src, value, pos)
            cur.skip_space()
            first = cur.peek()
            if first is None:
                raise self.src.error("missing value for command", pos)
            if first.kind == "ident" and first.value in UNSUPPORTED_WORDS:
                raise self.src.error(f'"{first.value}" is not supported', first.pos)
            if first.kind == "ident" and first.value in CONTROL_WORDS:
                cur.next()
                if first.value in ("end", "else"):
                    return parts, (first.value, cur, first.pos)
                parts.append(self.control(first.value, cur, first.pos))
            else:
                parts.append(self.action(cur))
        return parts, None

    def action(self, cur: Cursor) -> Part:
        decl, run, static = self.pipeline(cur)
        cur.expect_end("action")
        if decl:
            return self.bind(decl, run)
        if self.json and self.json_state != JSON_OUT:
            if self.json_state == JSON_IN_ESCAPE:
                self.json_mixed = True
            return lambda st: json_inner(output(run(st)))
        if static is STR:
            return run
        return lambda st: output(run(st))

    def bind(self, decl: list[tuple[str, bool, int]], run: Run) -> Part:
        (slot,) = self.declare(decl)

        def assign(st: State) -> str:
            st.vars[slot] = run(st)
            return ""

        return assign

    def control(self, word: str, cur: Cursor, pos: int) -> Part:
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

    def checked(self, decl: list[tuple[str, bool, int]], run: Run, pos: int) -> Run:
        if not decl:
            return run
        if len(decl) > 1:
            raise self.src.error("only range declares two variables", pos)
        (slot,) = self.declare(decl)

        def set_and_return(st: State) -> Any:
            value = st.vars[slot] = run(st)
            return value

        return set_and_return

    def if_(self, cur: Cursor, pos: int) -> Part:
        decl, run, _ = self.pipeline(cur)
        cur.expect_end("{{if}}")
        cond = self.checked(decl, run, pos)
        entry = self.json_state
        body, term = self.parse_list()
        then, otherwise = self.block_after(body, term, "if", pos, entry)

        def run_if(st: State) -> str:
            if truth(cond(st)):
                return then(st)  # type: ignore[no-any-return]
            return otherwise(st) if otherwise is not None else ""

        return run_if

    def with_(self, cur: Cursor, pos: int) -> Part:
        decl, run, static = self.pipeline(cur)
        cur.expect_end("{{with}}")
        value_of = self.checked(decl, run, pos)
        self.dots.append((static if static in TABLES else DYNAMIC, False))
        entry = self.json_state
        try:
            body, term = self.parse_list()
        finally:
            self.dots.pop()
        then, otherwise = self.block_after(body, term, "with", pos, entry)

        def run_with(st: State) -> str:
            value = value_of(st)
            if not truth(value):
                return otherwise(st) if otherwise is not None else ""
            saved = st.dot
            st.dot = value
            out: str = then(st)
            st.dot = saved
            return out

        return run_with

    def range_(self, cur: Cursor, pos: int) -> Part:
        decl, seq, _ = self.pipeline(cur, allow_two=True)
        cur.expect_end("{{range}}")
        slots = self.declare(decl)
        key_slot = slots[0] if len(slots) == 2 else None
        value_slot = slots[-1] if slots else None
        self.dots.append((DYNAMIC, False))
        entry = self.json_state
        try:
            body, term = self.parse_list()
        finally:
            self.dots.pop()
        then, otherwise = self.block_after(body, term, "range", pos, entry)

        def run_range(st: State) -> str:
            items = iterate(seq(st))
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
        body: list[Part],
        term: tuple[str, Cursor, int] | None,
        what: str,
        pos: int,
        entry: int,
    ) -> tuple[Run, Run | None]:
        if term is None:
            raise self.src.error(f"missing {{{{end}}}} for {what}", pos)
        self.settle(entry)
        word, cur, term_pos = term
        if word == "end":
            cur.expect_end("{{end}}")
            return joined(body), None
        cur.skip_space()
        token = cur.peek()
        if what == "if" and token is not None and token.kind == "ident" and token.value == "if":
            # {{else if}} is an if inside the else, closed by the same {{end}}.
            cur.next()
            return joined(body), as_run(self.control("if", cur, token.pos))
        cur.expect_end("{{else}}")
        otherwise, term = self.parse_list()
        if term is None or term[0] != "end":
            where = term[2] if term is not None else term_pos
            raise self.src.error(f"expected {{{{end}}}} after {{{{else}}}} of {what}", where)
        self.settle(entry)
        term[1].expect_end("{{end}}")
        return joined(body), joined(otherwise)


class Template:
    """A compiled template; `render` is safe to call from many threads at once."""

    __slots__ = ("_limit", "_run", "_slots", "constant", "source", "where")

    def __init__(self, source: str, where: str, part: Part, slots: int, limit: int) -> None:
        self.source = source
        self.where = where
        # Set when the template has no actions: the pipeline can skip rendering.
        self.constant: str | None = part if type(part) is str else None
        self._run = as_run(part)
        self._slots = slots
        self._limit = limit

    def render(self, context: TemplateContext) -> str:
        if self.constant is not None:
            return self.constant
        out: str = self._run(State(context, self._slots, self._limit))
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
    src = Source(text, where)
    compiler = _Compiler(src, json)
    parts, term = compiler.parse_list()
    if term is not None:
        raise src.error(f"unexpected {{{{{term[0]}}}}}", term[2])
    if compiler.json_mixed:
        return compile_template(text, where=where, max_output=max_output)
    return Template(text, where, merge(parts), compiler.slots, min(max_output, MAX_OUTPUT))
