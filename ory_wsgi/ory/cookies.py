"""Which of a request's cookies Ory gets: one set of rules for every call to Ory.

    names = session_cookie_names(ory_url, project, session_cookie)
    session_cookies(header, names)   # whoami and logout: the session cookies only
    ory_cookies(header, names)       # /.ory/*: every cookie Kratos or Ory Network reads

A cookie is Ory's when its name starts with `ory_`, `csrf_token`,
`__Host-ory` or `__Secure-ory`, or is one of the session cookie names
(`ory_kratos_session`, `ory_session_<slug>`, `[ory] session_cookie`). The
names are compared whole, never as a prefix of the `name=value` text. An
app's own cookies never travel to Ory.

The whoami and logout calls get the session cookies alone, each name once
(the first, which is the one Kratos reads): nothing else a client sends can
make those calls fail. A cookie value, session token or bearer token longer
than `MAX_CREDENTIAL_BYTES` is never sent to Ory at all and is logged:
browsers keep no cookie that large, so it is garbage or an attack, and Ory's
answer to it (400, 431) would say nothing about Ory's health.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from urllib.parse import urlsplit

log = logging.getLogger("ory_wsgi.ory")

SELF_HOSTED_SESSION_COOKIE = "ory_kratos_session"
ORY_NETWORK_SUFFIX = ".projects.oryapis.com"
# Cookie names Kratos and Ory Network set and read (the CSRF cookie is
# `csrf_token_<hash>`; `__Host-`/`__Secure-` variants on Ory Network).
ORY_COOKIE_PREFIXES = ("ory_", "csrf_token", "__Host-ory", "__Secure-ory")
MAX_CREDENTIAL_BYTES = 4096
"""The longest cookie value or token sent to Ory: the size one browser cookie may have."""
TOO_LARGE = "credential_too_large"


def session_cookie_names(
    ory_url: str, project: str = "", session_cookie: str = ""
) -> frozenset[str]:
    """The cookie names Kratos may read the session from.

    The Ory Network name is derived from the project slug, or from an
    `https://<slug>.projects.oryapis.com` SDK URL when no slug is given.
    """
    names = {SELF_HOSTED_SESSION_COOKIE}
    host = urlsplit(ory_url).hostname or ""
    if not project and host.endswith(ORY_NETWORK_SUFFIX):
        project = host.removesuffix(ORY_NETWORK_SUFFIX)
    if project:
        names.add("ory_session_" + project.replace("-", ""))
    if session_cookie:
        names.add(session_cookie)
    return frozenset(names)


def is_ory_cookie(name: str, session_names: frozenset[str]) -> bool:
    return name.startswith(ORY_COOKIE_PREFIXES) or name in session_names


def session_cookies(header: str, session_names: frozenset[str], request_id: str = "") -> str:
    """The `Cookie` header for whoami and logout: each non-empty session cookie, once."""
    kept: list[str] = []
    seen: set[str] = set()
    for name, value in _cookies(header):
        if value and name in session_names and name not in seen and _fits(name, value, request_id):
            seen.add(name)
            kept.append(f"{name}={value}")
    return "; ".join(kept)


def ory_cookies(header: str, session_names: frozenset[str], request_id: str = "") -> str:
    """The `Cookie` header for a request forwarded to Ory: Ory's cookies, in order."""
    return "; ".join(
        f"{name}={value}"
        for name, value in _cookies(header)
        if is_ory_cookie(name, session_names) and _fits(name, value, request_id)
    )


def credential_fits(what: str, value: str, request_id: str = "") -> bool:
    """True when `value` is small enough to send to Ory; else logs why it is not sent."""
    if len(value) <= MAX_CREDENTIAL_BYTES:
        return True
    log.warning(
        "%s: %s is %d bytes (limit %d), not sent to Ory",
        TOO_LARGE,
        what,
        len(value),
        MAX_CREDENTIAL_BYTES,
        extra={"fields": {"error": TOO_LARGE, "request_id": request_id}},
    )
    return False


def _fits(name: str, value: str, request_id: str) -> bool:
    if len(value) <= MAX_CREDENTIAL_BYTES:
        return True
    # The name is the client's: repr() keeps a control character out of the log line.
    return credential_fits(f"cookie {name[:64]!r}", value, request_id)


def _cookies(header: str) -> Iterator[tuple[str, str]]:
    for piece in header.split(";"):
        name, sep, value = piece.partition("=")
        if sep:
            yield name.strip(), value.strip()
