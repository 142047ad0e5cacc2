"""Headers in which a client claims who it is or where it connects from, for the trust tests."""

from __future__ import annotations

from collections.abc import Iterable

# Claims a client may make about who it is, or where it connects from (several of each family).
IDENTITY_CLAIMS = {
    "Remote-User": "admin",
    "X-Remote-User": "admin",
    "X-Forwarded-User": "admin",
    "X-Forwarded-Email": "admin@example.com",
    "X-Forwarded-Groups": "admins",
    "X-Auth-Request-User": "admin",
    "X-Authenticated-Userid": "admin",
    "X-User-Id": "1",
    "X-Webauth-User": "admin",
    "X-Ory-Subject": "admin",
    "X-Ory-Identity-Id": "admin",
}
CLIENT_IP_CLAIMS = {
    "X-Real-IP": "6.6.6.1",
    "True-Client-IP": "6.6.6.2",
    "X-Client-IP": "6.6.6.3",
    "CF-Connecting-IP": "6.6.6.4",
    "Fastly-Client-IP": "6.6.6.5",
    "X-Cluster-Client-IP": "6.6.6.6",
    "X-Original-Forwarded-For": "6.6.6.7",
    "Forwarded-For": "6.6.6.8",
}


def claims_in(headers: Iterable[str]) -> set[str]:
    """The claim headers (any case) among `headers`."""
    claims = {name.lower() for name in {**IDENTITY_CLAIMS, **CLIENT_IP_CLAIMS}}
    return {name.lower() for name in headers} & claims
