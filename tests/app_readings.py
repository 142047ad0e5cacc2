"""The security tests' yardstick: every way an application could read a forwarded path."""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote

# What lenient readers trim from a segment's end: whitespace and controls, then dots.
BLANK = r"[\s\x00-\x1f\x7f]+\Z"
BLANK_OR_DOT = r"[\s\x00-\x1f\x7f.]+\Z"


def app_readings(path: str) -> set[str]:
    """How frameworks could read the forwarded path (no query): decoded once,
    repeated slashes merged; params and trailing dots kept (werkzeug, Django)
    or dropped (servlet containers, Windows); cut at a decoded `?`, `#` or NUL
    or not; one final newline ignored (Python routers matching with `re`'s `$`:
    Pyramid, hand-written ones) or controls dropped anywhere (WHATWG URL
    parsers); dot segments resolved after decoding (some) or not (most)."""
    decoded = unquote(path, errors="replace").replace("\\", "/")
    cut = re.split(r"[\x00#?]", decoded, maxsplit=1)[0]
    texts = {decoded, cut, decoded.removesuffix("\n"), re.sub(r"[\x00-\x1f\x7f]", "", decoded)}
    readings = set()
    for text in texts:
        for lenient in (False, True):
            segments = [s for s in text.split("/") if s]
            if lenient:
                segments = [re.sub(BLANK, "", s.split(";", 1)[0]) for s in segments]
                segments = [
                    s if s in (".", "..") else re.sub(BLANK_OR_DOT, "", s) for s in segments
                ]
            segments = [s for s in segments if s]
            readings.add("/" + "/".join(segments))
            resolved: list[str] = []
            for segment in segments:
                if segment.split(";", 1)[0] == "..":
                    if resolved:
                        resolved.pop()
                elif segment != ".":
                    resolved.append(segment)
            readings.add("/" + "/".join(resolved))
    return readings


def under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def served_as_protected(path: str, protected: Iterable[str], public: Iterable[str] = ()) -> bool:
    """Whether some application would serve `path` as a page under a protected
    prefix (and not under one of its public exceptions), case kept or folded."""
    protected, public = tuple(protected), tuple(public)
    for reading in app_readings(path):
        for view in (reading, reading.lower()):
            if any(under(view, p) for p in protected) and not any(under(view, p) for p in public):
                return True
    return False
