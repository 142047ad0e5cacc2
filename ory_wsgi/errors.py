"""The project's own exception types, mapped to HTTP answers at the edge."""

from __future__ import annotations


class ConfigError(Exception):
    """A setting is wrong; the message is the one line shown to the operator."""

    def __init__(self, message: str) -> None:
        # Key names and values from the file are quoted into the message and may hold
        # line breaks; the operator still gets one line.
        super().__init__(message.replace("\r", "\\r").replace("\n", "\\n"))


class UpstreamError(Exception):
    """The upstream could not be reached or did not answer in time."""

    status = 502
    code = "upstream_unreachable"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


class UpstreamBadResponse(UpstreamError):
    """The upstream answered, but not with a response a proxy may pass on (framing, syntax)."""

    code = "upstream_bad_response"


class UpstreamHeadersTooLarge(UpstreamBadResponse):
    """The upstream's response headers are beyond the proxy's limits (lines or bytes)."""

    code = "upstream_headers_too_large"


class BodyTooLarge(Exception):
    """The request body is larger than `proxy.max_body_size`."""


class BadRequest(Exception):
    """The request is malformed (a header or the path); answered with 400."""
