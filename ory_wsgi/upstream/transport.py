"""How the proxy reaches an upstream: its address, its TLS settings, and one new connection.

    target = parse_upstream("https://app.internal:8443", TLSOptions(ca_file="/etc/ca.pem"))
    transport = Transport(target, connect_timeout=5, read_timeout=120)
    connection = transport.connect()  # an http.client.HTTPConnection, already connected

The one place that reads an upstream spec and opens sockets to it: the
connection pool (`pool.py`) and the WebSocket splice
(`websocket.py`) both call `Transport.connect`. An upstream is one of

- `http://host[:port]`, `https://host[:port]`;
- `unix:PATH`: a Unix socket, as gunicorn (`--bind unix:PATH`) and nginx
  (`proxy_pass http://unix:PATH`) spell it. Plain HTTP on it; the app gets
  the client's Host, or `localhost` with `rewrite_host` (what nginx sends).

TLS is verified, always: the system CAs, or only `ca_file` when it is set;
the certificate must name `server_name` (by default the URL's host), which is
also what SNI sends. `client_cert` (+ `client_key`) is presented to apps
that demand one (mTLS). The context is built once, at startup: a missing or
unreadable file, a file that is not PEM, a key that does not match its
certificate, or a TLS option on an upstream that is not https raises
`ConfigError` naming the setting. `TLSOptions` is one upstream's settings,
so each access rule can build its own target.

Failures to connect are `UpstreamError` (502: refused, no such socket,
unresolvable, TLS refused or unverifiable) or `UpstreamTimeout` (504), with
a message that says which and, for TLS, which setting to look at.
"""

from __future__ import annotations

import http.client
import os
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import urlsplit

from ory_wsgi.errors import ConfigError, UpstreamError, UpstreamTimeout

UNIX_PREFIX = "unix:"
# The Host a Unix-socket upstream gets under rewrite_host: what nginx sends for one.
UNIX_HOST = "localhost"
# sun_path is 108 bytes on Linux, the final NUL included.
MAX_UNIX_PATH = 107
TLS_KEYS = ("ca_file", "client_cert", "client_key", "server_name")
TLS_FILES = ("ca_file", "client_cert", "client_key")
T = TypeVar("T")
# TLS alerts by which an app refuses the client certificate we sent, or its absence.
CLIENT_CERT_ALERTS = frozenset(
    {
        "TLSV13_ALERT_CERTIFICATE_REQUIRED",
        "TLSV1_ALERT_UNKNOWN_CA",
        "SSLV3_ALERT_BAD_CERTIFICATE",
        "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
        "SSLV3_ALERT_HANDSHAKE_FAILURE",
        "TLSV1_ALERT_ACCESS_DENIED",
        "SSLV3_ALERT_CERTIFICATE_EXPIRED",
    }
)


@dataclass(frozen=True)
class TLSOptions:
    """TLS to one upstream: `[proxy] upstream_*`, or a rule's `upstream = {...}` keys."""

    ca_file: str = ""
    client_cert: str = ""
    client_key: str = ""
    server_name: str = ""

    def __bool__(self) -> bool:
        return bool(self.ca_file or self.client_cert or self.client_key or self.server_name)


@dataclass(frozen=True)
class UpstreamTarget:
    """A parsed upstream: scheme `http`, `https` or `unix`, where it is, and its TLS options."""

    scheme: str
    host: str = ""  # "" for unix
    port: int = 0  # 0 for unix
    socket_path: str = ""  # unix only
    netloc: str = ""  # host[:port] as written in the URL; "" for unix
    tls: TLSOptions = field(default_factory=TLSOptions)

    @property
    def secure(self) -> bool:
        return self.scheme == "https"

    @property
    def is_unix(self) -> bool:
        return self.scheme == "unix"

    @property
    def host_header(self) -> str:
        """The Host the app gets under `rewrite_host`."""
        return UNIX_HOST if self.is_unix else self.netloc

    @property
    def origins(self) -> tuple[str, ...]:
        """The upstream's own origins as an app would write them in a Location header.

        A Unix-socket app knows no origin of its own but the Host it was
        given: `http://localhost` under `rewrite_host` (the forwarder uses
        these only then); otherwise the client's Host, which is the public
        URL already, so nothing needs rewriting.
        """
        if self.is_unix:
            return (f"http://{UNIX_HOST}", f"http://{UNIX_HOST}:80")
        default_port = ":443" if self.secure else ":80"
        origin = f"{self.scheme}://{self.netloc}".lower()
        if urlsplit(f"//{self.netloc}").port in (None, 80, 443):
            return tuple(
                sorted({origin, origin.removesuffix(default_port), f"{origin}{default_port}"})
            )
        return (origin,)

    def describe(self) -> str:
        """Where it is, for log lines."""
        return f"unix:{self.socket_path}" if self.is_unix else f"{self.host}:{self.port}"


def parse_upstream(spec: str, tls: TLSOptions | None = None) -> UpstreamTarget:
    """`http://host[:port]`, `https://host[:port]` or `unix:PATH`; ValueError saying what is wrong.

    A path after the authority is allowed and ignored here (Ory's URL may
    have one; the proxy's own upstream setting refuses it).
    """
    tls = tls or TLSOptions()
    if spec.startswith(UNIX_PREFIX):
        path = spec[len(UNIX_PREFIX) :]
        if path.startswith("///"):
            # unix:///run/app.sock: the URL-ish spelling of an absolute path.
            path = path[2:]
        elif path.startswith("//"):
            # unix://run/app.sock: a host or a relative path? Neither is guessed.
            raise ValueError(f"ambiguous Unix socket path: {spec!r} (write unix:/run/app.sock)")
        if not path or "\x00" in path:
            raise ValueError(f"not a Unix socket path: {spec!r} (write unix:/run/app.sock)")
        if len(os.fsencode(path)) > MAX_UNIX_PATH:
            raise ValueError(f"a Unix socket path is at most {MAX_UNIX_PATH} bytes: {spec!r}")
        return UpstreamTarget("unix", socket_path=path, tls=tls)
    try:
        parts = urlsplit(spec)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"not a URL: {spec!r} ({exc})") from None
    if parts.scheme.endswith("+unix"):
        raise ValueError(f"write a Unix-socket upstream as unix:/path/to.sock, not {spec!r}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL or unix:PATH: {spec!r}")
    secure = parts.scheme == "https"
    return UpstreamTarget(
        parts.scheme,
        host=parts.hostname,
        port=port or (443 if secure else 80),
        netloc=parts.netloc,
        tls=tls,
    )


def proxy_setting(key: str) -> str:
    return f"[proxy] upstream_{key}"


def ssl_context(
    target: UpstreamTarget, setting: Callable[[str], str] = proxy_setting
) -> ssl.SSLContext | None:
    """The verifying TLS context for `target` (None when it is not https).

    `setting("ca_file")` names the setting in a ConfigError; by default the
    `[proxy] upstream_*` keys.
    """
    tls = target.tls
    if not target.secure:
        if tls:
            first = next(key for key in TLS_KEYS if getattr(tls, key))
            raise ConfigError(
                f"{setting(first)}: only an https upstream uses TLS, this one is "
                f"{target.scheme}: (remove the setting, or use https://)"
            )
        return None
    if tls.client_key and not tls.client_cert:
        raise ConfigError(f"{setting('client_key')}: set client_cert too (the certificate)")
    for key in TLS_FILES:
        if getattr(tls, key):
            _readable(setting(key), getattr(tls, key))
    # With a CA file only that CA is trusted (create_default_context loads the
    # system store only when given none): a private CA's apps, not the whole web.
    context = _load(
        setting("ca_file"),
        tls.ca_file,
        lambda: ssl.create_default_context(cafile=tls.ca_file or None),
    )
    if tls.client_cert:
        where = setting("client_cert") + (f" / {setting('client_key')}" if tls.client_key else "")
        # A password callback that fails keeps OpenSSL from prompting on the terminal.
        _load(
            where,
            tls.client_cert,
            lambda: context.load_cert_chain(
                tls.client_cert, tls.client_key or None, password=_no_password
            ),
        )
    # create_default_context's defaults already; stated so that nothing here turns them off.
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def _no_password() -> bytes:
    raise ValueError("encrypted key")


def _readable(where: str, path: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such file: {path}") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {path}: {exc.strerror}") from None


def _load(where: str, path: str, load: Callable[[], T]) -> T:
    try:
        return load()
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            why = "the key does not belong to the certificate"
        else:
            why = f"not a PEM file as expected, or an encrypted key ({exc.reason or exc})"
        raise ConfigError(f"{where}: {why}: {path}") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {path}: {exc.strerror or exc}") from None


class Transport:
    """Opens connections to one upstream; built once at startup, shared by every thread."""

    def __init__(
        self,
        target: UpstreamTarget,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 120.0,
        setting: Callable[[str], str] = proxy_setting,
    ) -> None:
        self.target = target
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.context = ssl_context(target, setting)
        self.setting = setting
        self.server_name = target.tls.server_name or target.host

    @classmethod
    def for_url(
        cls, url: str, *, connect_timeout: float = 5.0, read_timeout: float = 120.0
    ) -> Transport:
        """A transport to `url` with the default TLS settings (system CAs, no client cert)."""
        return cls(parse_upstream(url), connect_timeout=connect_timeout, read_timeout=read_timeout)

    def connect(self) -> http.client.HTTPConnection:
        """A new connection, connected (and TLS-verified), reads timing out after `read_timeout`.

        It is a plain `http.client.HTTPConnection` holding our socket in its
        `sock` attribute (what its own `connect()` sets; pinned by a test),
        so http.client writes requests and reads answers on it as usual.
        """
        sock = self._open()
        sock.settimeout(self.read_timeout)
        target = self.target
        connection = http.client.HTTPConnection(target.host or UNIX_HOST, target.port or None)
        connection.sock = sock
        return connection

    def explain(self, message: str, exc: BaseException) -> str:
        """`message`, with the setting to look at when the app refused our TLS client side.

        Under TLS 1.3 an app that wants a client certificate refuses it only
        after the handshake, on the first read: the alert arrives here.
        """
        if isinstance(exc, ssl.SSLError) and exc.reason in CLIENT_CERT_ALERTS:
            return (
                f"{message}: the app refused the client certificate ({self.setting('client_cert')})"
            )
        return message

    def _open(self) -> socket.socket:
        target = self.target
        where = target.describe()
        try:
            if target.is_unix:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.settimeout(self.connect_timeout)
                    sock.connect(target.socket_path)
                except BaseException:
                    sock.close()
                    raise
                return sock
            sock = socket.create_connection((target.host, target.port), self.connect_timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except TimeoutError as exc:
            raise UpstreamTimeout(f"connect to {where}: {_reason(exc)}") from None
        except FileNotFoundError:
            raise UpstreamError(f"connect to {where}: no such socket") from None
        except OSError as exc:
            # Refused, unresolvable, unreachable: nobody to talk to.
            raise UpstreamError(f"connect to {where}: {_reason(exc)}") from None
        if self.context is None:
            return sock
        try:
            # The handshake runs here, under the connect timeout still set on the socket.
            return self.context.wrap_socket(sock, server_hostname=self.server_name)
        except TimeoutError as exc:
            sock.close()
            raise UpstreamTimeout(f"TLS handshake with {where}: {_reason(exc)}") from None
        except ssl.SSLCertVerificationError as exc:
            sock.close()
            hint = (
                f"is {self.setting('ca_file')} the CA that signed the app's certificate, "
                f"and does the certificate name {self.server_name!r} "
                f"({self.setting('server_name')})?"
            )
            raise UpstreamError(
                f"TLS handshake with {where}: certificate verify failed: "
                f"{exc.verify_message or _reason(exc)}: {hint}"
            ) from None
        except OSError as exc:
            sock.close()
            raise UpstreamError(f"TLS handshake with {where}: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:200]
