"""Log output: one JSON object per line (or plain text), to stderr."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_HANDLER_FLAG = "_ory_wsgi_handler"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            line.update(fields)
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line, separators=(",", ":"), default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = getattr(record, "fields", None)
        if fields:
            text += " " + " ".join(f"{key}={value}" for key, value in fields.items())
        return text


def configure_logging(fmt: str, level: str) -> None:
    """Send ory_wsgi's logs to stderr, unless the host application routed them already."""
    logger = logging.getLogger("ory_wsgi")
    logger.setLevel(level.upper())
    ours = [h for h in logger.handlers if getattr(h, _HANDLER_FLAG, False)]
    if logger.handlers and not ours:
        return
    for handler in ours:
        logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    setattr(handler, _HANDLER_FLAG, True)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    logger.addHandler(handler)
    logger.propagate = False
