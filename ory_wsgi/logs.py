"""Log output: one JSON object per line (or plain text), to stderr, written in batches.

Lines below WARNING are buffered and written at least every second (and at
exit); a warning or an error is written at once, after the lines before it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import weakref
from typing import Any, TextIO

_HANDLER_FLAG = "_ory_wsgi_handler"
FLUSH_INTERVAL = 1.0  # seconds a buffered line may wait
FLUSH_SIZE = 64 * 1024  # characters buffered before they are written regardless

_encode = json.JSONEncoder(separators=(",", ":"), default=str).encode
_second_cache: tuple[int, str] = (-1, "")


def _timestamp(created: float) -> str:
    """`2026-11-22T20:55:25.123Z`; the part down to the second is formatted once a second."""
    global _second_cache
    second = int(created)
    cached_second, text = _second_cache
    if second != cached_second:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second_cache = (second, text)
    return f"{text}.{int((created - second) * 1000):03d}Z"


def json_line(created: float, level: str, logger: str, msg: str, fields: dict[str, Any]) -> str:
    """One log line as JSON: time, level, logger, msg, then the fields."""
    line: dict[str, Any] = {
        "time": _timestamp(created),
        "level": level,
        "logger": logger,
        "msg": msg,
    }
    if fields:
        line.update(fields)
    return _encode(line)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = dict(getattr(record, "fields", None) or {})
        if record.exc_info:
            fields["traceback"] = self.formatException(record.exc_info)
        return json_line(
            record.created, record.levelname.lower(), record.name, record.getMessage(), fields
        )


# Controls that would end a line or rewrite a terminal: C0, DEL, C1 (NEL is U+0085) and
# Unicode's line and paragraph separators, written as Python escapes.
_ESCAPES = {
    code: f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    for code in (*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029)
}
_ESCAPES.update({0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"})


def escape_controls(text: str) -> str:
    """`text` on one line: control characters written as `\\n`, `\\x1b`, ..."""
    return text.translate(_ESCAPES)


class TextFormatter(logging.Formatter):
    """`time LEVEL logger message key=value ...`, one line per record (a traceback aside).

    The message and the fields often carry what a client sent (a path, a
    header): their control characters are escaped, so a request cannot end
    the line and write one of its own.
    """

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = super().formatMessage(record)
        fields = getattr(record, "fields", None)
        if fields:
            text += " " + " ".join(f"{key}={value}" for key, value in fields.items())
        return escape_controls(text)


class BufferedLineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that writes lines in batches: at least every second, at once for warnings.

    One background thread per process (started on first use, so a forked
    worker gets its own) writes what waited; `flush()` (called by
    `logging.shutdown` at exit) writes the rest.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream)
        self._pending: list[str] = []
        self._size = 0
        self._pending_lock = threading.Lock()
        _handlers.add(self)

    def write_line(self, line: str, urgent: bool = False) -> None:
        """Queue one formatted line (no newline); `urgent` writes it and all before it now."""
        if _flusher_pid != os.getpid():
            _start_flusher()
        with self._pending_lock:
            self._pending.append(line)
            self._size += len(line)
            if not urgent and self._size < FLUSH_SIZE:
                return
            self._write_pending()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self.write_line(line, urgent=record.levelno >= logging.WARNING)

    def flush(self) -> None:
        with self._pending_lock:
            self._write_pending()

    def _write_pending(self) -> None:
        if not self._pending:
            return
        text = "\n".join(self._pending) + "\n"
        self._pending.clear()
        self._size = 0
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            pass  # stderr closed or gone: nowhere left to say so

    def _after_fork_in_child(self) -> None:
        # Lines queued before the fork are the parent's to write; its lock may be held.
        self._pending_lock = threading.Lock()
        self._pending = []
        self._size = 0


_handlers: weakref.WeakSet[BufferedLineHandler] = weakref.WeakSet()
_flusher_start = threading.Lock()
_flusher_pid = 0


def _start_flusher() -> None:
    global _flusher_pid
    with _flusher_start:
        if _flusher_pid == os.getpid():
            return
        _flusher_pid = os.getpid()
    threading.Thread(target=_flush_every_interval, name="ory-wsgi-log", daemon=True).start()


def _flush_every_interval() -> None:
    pid = os.getpid()
    while _flusher_pid == pid:
        time.sleep(FLUSH_INTERVAL)
        for handler in list(_handlers):
            handler.flush()


def _after_fork_in_child() -> None:
    global _flusher_start, _flusher_pid
    _flusher_start = threading.Lock()
    _flusher_pid = 0
    for handler in list(_handlers):
        handler._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)


def direct_json_handler(logger: logging.Logger) -> BufferedLineHandler | None:
    """Our JSON handler, when a line of `logger` would go to it alone and unfiltered, else None.

    Lets the access log write its line without building a LogRecord; any
    handler or filter the host application added sends it the usual way.
    """
    if logger.handlers or logger.filters or not logger.propagate:
        return None
    parent = logger.parent
    if parent is None or parent.filters or len(parent.handlers) != 1 or parent.propagate:
        return None
    handler = parent.handlers[0]
    if (
        not isinstance(handler, BufferedLineHandler)
        or handler.filters
        or not isinstance(handler.formatter, JsonFormatter)
        or handler.level > logging.INFO
    ):
        return None
    return handler


def configure_logging(fmt: str, level: str) -> None:
    """Send ory_wsgi's logs to stderr, unless the host application routed them already."""
    logger = logging.getLogger("ory_wsgi")
    logger.setLevel(level.upper())
    ours = [h for h in logger.handlers if getattr(h, _HANDLER_FLAG, False)]
    if logger.handlers and not ours:
        return
    for handler in ours:
        handler.flush()
        logger.removeHandler(handler)
    handler = BufferedLineHandler(sys.stderr)
    setattr(handler, _HANDLER_FLAG, True)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    logger.addHandler(handler)
    logger.propagate = False
