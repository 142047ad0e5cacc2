"""Client headers that claim who the user is, or where the request came from.

    from ory_wsgi.identity_headers import strip_claims
    strip_claims(environ, trusted_peer=environ["REMOTE_ADDR"] in trusted)

One list for every mode: the forwarder's header copy (to the app and to
`/.ory/*`) and the embedded middleware leave out the same headers.

- Identity claims (`IDENTITY_KEYS`, and every `X-Ory-*` and `Ory-*` header):
  frameworks and apps read them as "the proxy in front says this is the
  user" (Django's RemoteUserMiddleware, oauth2-proxy and nginx/Apache auth
  modules, forward-auth answers). Here the proxy is the one that says who
  the user is, in a JWT, so a client's claim is always removed, whoever
  sent it.
- Client-IP claims (`CLIENT_IP_KEYS`): apps and Kratos (for a session's
  device IP) prefer `True-Client-IP`, `X-Real-IP` and their kin over the
  socket's address. They are kept only from a peer in `[proxy]
  trusted_proxies`, like `X-Forwarded-For`, in every mode.
- The rest of the `X-Forwarded-*` family (`FORWARDING_KEYS`: port, prefix,
  scheme) is what the proxy in front saw: the proxy, which sets
  `X-Forwarded-*` itself, keeps them only from `trusted_proxies` too. The
  embedded middleware leaves them, like `X-Forwarded-Proto`, to the
  framework's own proxy settings (ProxyFix, Django's `SECURE_PROXY_SSL_HEADER`).
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from typing import Any

IDENTITY_KEYS = frozenset(
    {
        "HTTP_REMOTE_USER",
        "HTTP_X_REMOTE_USER",
        "HTTP_X_USER",
        "HTTP_X_USER_ID",
        "HTTP_X_USER_EMAIL",
        "HTTP_X_USERNAME",
        "HTTP_X_EMAIL",
        "HTTP_X_SUBJECT",
        "HTTP_X_FORWARDED_USER",
        "HTTP_X_FORWARDED_EMAIL",
        "HTTP_X_FORWARDED_PREFERRED_USERNAME",
        "HTTP_X_FORWARDED_GROUPS",
        "HTTP_X_FORWARDED_ACCESS_TOKEN",
        "HTTP_X_AUTH_REQUEST_USER",
        "HTTP_X_AUTH_REQUEST_EMAIL",
        "HTTP_X_AUTH_REQUEST_PREFERRED_USERNAME",
        "HTTP_X_AUTH_REQUEST_GROUPS",
        "HTTP_X_AUTH_REQUEST_ACCESS_TOKEN",
        "HTTP_X_AUTHENTICATED_USER",
        "HTTP_X_AUTHENTICATED_USERID",
        "HTTP_X_AUTHENTICATED_EMAIL",
        "HTTP_X_AUTHENTICATED_GROUPS",
        "HTTP_X_WEBAUTH_USER",
    }
)
"""Identity headers as WSGI environ keys (`Remote-User` is `HTTP_REMOTE_USER`)."""

IDENTITY_PREFIXES = ("HTTP_X_ORY_", "HTTP_ORY_")
"""Every header in these families: `X-Ory-Subject` (forward-auth answers), `Ory-*` (Ory's own)."""

CLIENT_IP_KEYS = frozenset(
    {
        "HTTP_X_REAL_IP",
        "HTTP_TRUE_CLIENT_IP",
        "HTTP_X_CLIENT_IP",
        "HTTP_CLIENT_IP",
        "HTTP_CF_CONNECTING_IP",
        "HTTP_CF_CONNECTING_IPV6",
        "HTTP_FASTLY_CLIENT_IP",
        "HTTP_X_CLUSTER_CLIENT_IP",
        "HTTP_X_ORIGINAL_FORWARDED_FOR",
        "HTTP_X_FORWARDED",
        "HTTP_FORWARDED_FOR",
        "HTTP_X_ORIGINATING_IP",
        "HTTP_X_REMOTE_IP",
        "HTTP_X_REMOTE_ADDR",
        "HTTP_X_APPENGINE_USER_IP",
        "HTTP_X_AZURE_CLIENTIP",
        "HTTP_X_AZURE_SOCKETIP",
        "HTTP_X_ENVOY_EXTERNAL_ADDRESS",
        "HTTP_AKAMAI_CLIENT_IP",
    }
)
"""Client-IP headers as WSGI environ keys; believed only from `trusted_proxies`."""

FORWARDING_KEYS = frozenset(
    {
        "HTTP_X_FORWARDED_PORT",
        "HTTP_X_FORWARDED_PREFIX",
        "HTTP_X_FORWARDED_SERVER",
        "HTTP_X_FORWARDED_SCHEME",
        "HTTP_X_FORWARDED_SSL",
        "HTTP_X_FORWARDED_PROTOCOL",
        "HTTP_X_URL_SCHEME",
        "HTTP_FRONT_END_HTTPS",
        "HTTP_X_ORIGINAL_HOST",
    }
)
"""The rest of the X-Forwarded-* family (port, prefix, scheme): what the proxy in front
saw, believed only from `trusted_proxies` (ProxyFix and frameworks build URLs from them)."""

PROXY_KEYS = CLIENT_IP_KEYS | FORWARDING_KEYS
"""Every header only a proxy in `trusted_proxies` may set."""


def environ_keys(names: Iterable[str]) -> frozenset[str]:
    """`["X-Auth-User", "HTTP_X_TOKEN"]` -> `{"HTTP_X_AUTH_USER", "HTTP_X_TOKEN"}`."""
    keys = (name.upper() for name in names)
    return frozenset(
        key if key.startswith("HTTP_") else "HTTP_" + key.replace("-", "_") for key in keys
    )


def is_claim(key: str, trusted_peer: bool) -> bool:
    """True for an identity or client-IP environ key that must not pass from this peer."""
    return (
        key in IDENTITY_KEYS
        or key.startswith(IDENTITY_PREFIXES)
        or (not trusted_peer and key in CLIENT_IP_KEYS)
    )


def strip_claims(
    environ: MutableMapping[str, Any],
    *,
    trusted_peer: bool,
    extra_keys: frozenset[str] = frozenset(),
) -> None:
    """Remove the claims `is_claim` names (and `extra_keys`) from `environ`, in place."""
    claims = [
        key
        for key in environ
        if key.startswith("HTTP_") and (key in extra_keys or is_claim(key, trusted_peer))
    ]
    for key in claims:
        del environ[key]
