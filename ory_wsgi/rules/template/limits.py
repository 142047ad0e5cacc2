"""The limits on templates: checked when a template loads, or counted while it renders."""

from __future__ import annotations

MAX_OUTPUT = 256 * 1024
MAX_RANGE_STEPS = 10_000
# Deeper data than this prints as if absent (Python's recursion limit stays far away).
MAX_DEPTH = 64
# Deeper nesting of parentheses and blocks is refused at load.
MAX_NESTING = 50
MAX_WIDTH = 1024


class TemplateRenderError(Exception):
    """A render went past its limits (output size or range iterations)."""
