"""The template text split into text and actions, and each action into tokens.

Go's text/template lexer for the supported subset: delimiters with trim markers,
comments, quoted and raw strings, numbers, fields, variables and words. `Source`
makes errors that name the template and point at a line and column; `suggest` adds
the closest known name.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ory_wsgi.errors import ConfigError


class TemplateError(ConfigError):
    """A template is outside the supported subset; the message is one line."""


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
CONTROL_WORDS = {"if", "range", "with", "else", "end"}
UNSUPPORTED_WORDS = {"define", "template", "block", "break", "continue"}


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # space field dot var ident string number bool nil ( ) | := = ,
    value: Any
    pos: int


class Source:
    """The template text, and errors that point into it."""

    def __init__(self, text: str, where: str) -> None:
        self.text = text
        self.where = where or "template"

    def error(self, message: str, pos: int) -> TemplateError:
        line = self.text.count("\n", 0, pos) + 1
        column = pos - (self.text.rfind("\n", 0, pos) + 1) + 1
        at = f"column {column}" if line == 1 else f"line {line}, column {column}"
        return TemplateError(f"{self.where}: {message} at {at}")


def segments(src: Source) -> list[tuple[str, Any, int]]:
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


def _lex_action(src: Source, i: int, start: int) -> tuple[list[Token], int, bool]:
    text, n = src.text, len(src.text)
    tokens: list[Token] = []
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
            tokens.append(Token("space", None, i))
            i = j
        elif c == '"':
            value, i2 = _lex_string(src, i)
            tokens.append(Token("string", value, i))
            i = i2
        elif c == "`":
            end = text.find("`", i + 1)
            if end < 0:
                raise src.error("unterminated raw quoted string", i)
            tokens.append(Token("string", text[i + 1 : end], i))
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
                tokens.append(Token("field", match.group(), i))
                i = match.end()
            else:
                tokens.append(Token("dot", None, i))
                i += 1
        elif c == "$":
            match = _WORD_RE.match(text, i + 1)
            name = "$" + (match.group() if match else "")
            tokens.append(Token("var", name, i))
            i += len(name)
        elif c.isalpha() or c == "_":
            match = _WORD_RE.match(text, i)
            assert match is not None
            word = match.group()
            if word in ("true", "false"):
                tokens.append(Token("bool", word == "true", i))
            elif word == "nil":
                tokens.append(Token("nil", None, i))
            else:
                tokens.append(Token("ident", word, i))
            i = match.end()
        elif text.startswith(":=", i):
            tokens.append(Token(":=", None, i))
            i += 2
        elif c in "()|=,":
            tokens.append(Token(c, None, i))
            i += 1
        else:
            raise src.error(f"unexpected {c!r} in action", i)


def _lex_number(src: Source, i: int, tokens: list[Token]) -> int:
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
    tokens.append(Token("number", value, i))
    return end


def _lex_string(src: Source, i: int) -> tuple[str, int]:
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


class Cursor:
    def __init__(self, src: Source, tokens: list[Token], end: int) -> None:
        self.src = src
        self.tokens = tokens
        self.i = 0
        self.end = end

    def peek(self) -> Token | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def next(self) -> Token:
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
            raise self.src.error(f"unexpected {describe(token)} in {what}", token.pos)


def describe(token: Token) -> str:
    if token.kind in ("field", "var", "ident"):
        return f'"{token.value}"' if token.kind != "field" else f'".{token.value}"'
    if token.kind in ("string", "number", "bool"):
        return f"{token.kind} {token.value!r}"
    return f'"{token.kind}"'


def suggest(name: str, choices: Iterable[str]) -> str:
    choices = list(choices)
    folded = [c for c in choices if c.lower() == name.lower()]
    close = folded or difflib.get_close_matches(name, choices, n=1)
    return f' (did you mean "{close[0]}"?)' if close else ""
