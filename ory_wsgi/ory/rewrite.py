"""Rewriting of Ory's answers (Set-Cookie, Location, bodies) so they live on the app's domain.

    rewriter = OryRewriter("https://slug.projects.oryapis.com", "https://app.example.com")
    headers = rewriter.rewrite_response_headers(ory_headers, request_path="/ui/login")
    if rewriter.is_rewritable(content_type, content_encoding):
        body = rewriter.rewrite_body(chunks, content_type, content_encoding)  # drop Content-Length

Pure text editing with everything compiled once in `OryRewriter.__init__`: no I/O, and
no header text or body bytes make it raise.
"""

from __future__ import annotations

import logging
import re
import zlib
from collections.abc import Iterable, Iterator
from urllib.parse import urlsplit

log = logging.getLogger("ory_wsgi.ory.rewrite")

# Media types (lower case, no parameters) whose bodies may carry Ory URLs as text.
TEXTUAL_TYPES = frozenset(
    {
        "application/json",
        "application/javascript",
        "application/x-javascript",
        "application/ecmascript",
        "application/xhtml+xml",
    }
)

# Browsers drop these anywhere in a URL, and trim C0 controls and spaces at both ends
# (WHATWG URL parsing); a Location is judged as the browser will read it.
_URL_IGNORED = str.maketrans("", "", "\t\n\r")
_URL_TRIMMED = "".join(map(chr, range(0x21)))
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")
# A dot segment, plain or percent-encoded: browsers resolve `%2e%2e` like `..`.
_DOT_SEGMENT = re.compile(r"(?:^|/)(?:\.|%2e){1,2}(?:/|$)", re.IGNORECASE)
_DOTS = {".": 1, "%2e": 1, "..": 2, ".%2e": 2, "%2e.": 2, "%2e%2e": 2}
# Bytes that would continue a host, port or path segment right after the Ory URL in a
# body: `https://ory.example.com.evil.com` or `...com@evil.com` is another host.
_URL_CONTINUES = rb"(?![A-Za-z0-9.\-_~:@%])"

BODY_CHUNK = 64 * 1024


class OryRewriter:
    """Rewrites Ory's answers for the browser: Ory's URL becomes `<public_url>/.ory`.

    Built once in `make_app`; every method is safe to call from many threads.

    `ory_url` is Kratos' public URL (it may carry a path, for a Kratos mounted under
    one); `public_url` is where users reach the proxy (scheme, host, optional port).
    `cookie_domain` is put on every Ory cookie (empty: cookies become host-only on
    the public host). `default_redirect_url` replaces Ory's `/ui/welcome` page.
    """

    def __init__(
        self,
        ory_url: str,
        public_url: str,
        *,
        cookie_domain: str = "",
        default_redirect_url: str = "",
    ) -> None:
        ory = urlsplit(ory_url.strip())
        public = urlsplit(public_url.strip())
        for name, parts in (("ory_url", ory), ("public_url", public)):
            if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
                raise ValueError(f"{name} must be an http(s) URL with a host")
        self.public_ory = f"{public.scheme.lower()}://{public.netloc.lower()}/.ory"
        self.cookie_domain = cookie_domain
        self.default_redirect_url = default_redirect_url
        self.https = public.scheme.lower() == "https"

        self._ory_scheme = ory.scheme.lower()
        self._ory_base_path = ory.path.rstrip("/")
        self._ory_origin = f"{self._ory_scheme}://{ory.netloc.lower()}"
        self._ory_authorities = _authority_variants(ory.scheme, ory.netloc)
        self._public_authorities = _authority_variants(public.scheme, public.netloc)
        self._public_scheme = public.scheme.lower()
        self._welcome_paths = frozenset({"/ui/welcome", "/welcome"})
        self._public_welcome_paths = frozenset({"/.ory/ui/welcome", "/.ory/welcome"})

        replacement = self.public_ory.encode("ascii")
        escaped_replacement = replacement.replace(b"/", b"\\/")
        needles: dict[bytes, bytes] = {}
        for authority in self._ory_authorities:
            plain = f"{self._ory_scheme}://{authority}{self._ory_base_path}".encode()
            needles[plain] = replacement
            needles[plain.replace(b"/", b"\\/")] = escaped_replacement
        # Longest first, so `https://host:443` wins over `https://host` at one position.
        ordered = sorted(needles, key=len, reverse=True)
        self._body_pattern = re.compile(
            b"(?:" + b"|".join(re.escape(n) for n in ordered) + b")" + _URL_CONTINUES
        )
        self._body_replacements = needles
        # A match starting this far from the end has its bytes and its look-ahead byte in view.
        self._body_keep = max(map(len, needles))

    # -- Set-Cookie ---------------------------------------------------------------

    def rewrite_set_cookie(self, value: str) -> str:
        """Put one `Set-Cookie` header of Ory's on the public domain, editing its text.

        - `Domain` is set to `cookie_domain` (added when absent, except on `__Host-`
          cookies, which may not carry one) or removed, so the cookie belongs to the
          public host;
        - public URL https: `Secure` added when absent; plain http: `Secure` dropped
          and `SameSite=None` turned into `SameSite=Lax` (browsers refuse None
          without Secure).

        The name and value, `Path`, `Expires` (which holds a comma), `Max-Age`,
        `HttpOnly` and unknown attributes are kept byte for byte and in order, as
        are the spaces around every attribute left in place.

        `Path` is deliberately not moved under `/.ory`: Kratos sets `Path=/`, and the
        session cookie must reach every path of the app, since the proxy reads it on
        app requests to look the session up.
        """
        parts = value.split(";")
        if len(parts) == 1 and not value.strip():
            return value
        # A `__Host-` cookie may carry no Domain at all (browsers refuse it otherwise).
        domain = "" if parts[0].lstrip()[:7].lower() == "__host-" else self.cookie_domain
        kept = [parts[0]]
        has_domain = has_secure = False
        changed = False
        for part in parts[1:]:
            name, eq, attribute_value = part.partition("=")
            key = name.strip().lower()
            if key == "domain":
                changed = True
                if domain and not has_domain:
                    kept.append(f"{name}{eq or '='}{domain}")
                    has_domain = True
                continue
            if key == "secure":
                if not self.https:
                    changed = True
                    continue
                has_secure = True
            elif key == "samesite" and not self.https:
                if attribute_value.strip().lower() == "none":
                    changed = True
                    lead = attribute_value[: len(attribute_value) - len(attribute_value.lstrip())]
                    trail = attribute_value[len(attribute_value.rstrip()) :]
                    part = f"{name}={lead}Lax{trail}"
            kept.append(part)

        added = []
        if domain and not has_domain:
            added.append(f" Domain={domain}")
        if self.https and not has_secure:
            added.append(" Secure")
        if added:
            # A trailing `;` stays last: the new attributes go before it.
            if len(kept) > 1 and not kept[-1].strip():
                kept[-1:-1] = added
            else:
                kept.extend(added)
        elif not changed:
            return value
        return ";".join(kept)

    # -- Location -----------------------------------------------------------------

    def rewrite_location(self, value: str, request_path: str) -> str:
        """Point a `Location` from Ory at `<public_url>/.ory`, or leave it alone.

        `request_path` is the path forwarded to Ory after `/.ory` was stripped (what
        Ory saw, relative to the Ory URL's own path), e.g. `/ui/login`; relative
        Locations are resolved against it as a browser would.

        - On Ory's origin (scheme and host in any case, default port or not), or
          relative: `<public_url>/.ory` + the path under the Ory URL, dot segments
          resolved (they can never climb out of `/.ory`), query and fragment as sent.
        - `/ui/welcome` or `/welcome` (on Ory, or already on `<public_url>/.ory`):
          `default_redirect_url`, when one is set.
        - Any other origin, or anything a browser would read as another host
          (`//evil.com`, `\\\\evil.com`, `https://ory.host@evil.com`): the value as
          sent, never turned into a URL of ours.
        - A relative path that lands outside a Kratos mounted under a path: the
          absolute Ory URL it means, since the public domain has no route to it.
        """
        url = value.strip(_URL_TRIMMED)
        if "\t" in url or "\n" in url or "\r" in url:
            url = url.translate(_URL_IGNORED)
        if not url:
            return value
        path, query, fragment = _split_path(url)
        # Browsers read `\\` as `/` before the query in http(s) URLs and relative ones.
        path = path.replace("\\", "/")
        scheme_match = _SCHEME.match(path)
        if scheme_match:
            scheme = scheme_match.group()[:-1].lower()
            if scheme not in ("http", "https"):
                return value
            path = path[scheme_match.end() :]
            if scheme == self._ory_scheme and not path.startswith("//"):
                # `https:x` on a page of the same scheme is a relative reference.
                return self._relative(path, query + fragment, request_path)
            return self._absolute(scheme, path, query + fragment, value)
        if path.startswith("//"):
            return self._absolute(self._ory_scheme, path, query + fragment, value)
        return self._relative(path, query + fragment, request_path)

    def _absolute(self, scheme: str, path: str, query_fragment: str, value: str) -> str:
        """An absolute or scheme-relative URL; `path` is what follows `scheme:`."""
        authority, slash, path = path.lstrip("/").partition("/")
        authority = authority.lower()
        if scheme == self._ory_scheme and authority in self._ory_authorities:
            return self._from_ory_path(slash + path, query_fragment)
        if (
            self.default_redirect_url
            and scheme == self._public_scheme
            and authority in self._public_authorities
            and _remove_dot_segments(slash + path or "/") in self._public_welcome_paths
        ):
            return self.default_redirect_url
        return value

    def _relative(self, path: str, query_fragment: str, request_path: str) -> str:
        if not path.startswith("/"):
            base = self._ory_base_path + "/" + request_path.partition("?")[0].lstrip("/")
            path = base[: base.rfind("/") + 1] + path if path else base
        return self._from_ory_path(path, query_fragment)

    def _from_ory_path(self, path: str, query_fragment: str) -> str:
        """Map a path on Ory's host to ours; `query_fragment` is kept as sent."""
        if ("." in path or "%" in path) and _DOT_SEGMENT.search(path):
            path = _remove_dot_segments(path)
        base = self._ory_base_path
        if base:
            if path == base:
                path = ""
            elif path.startswith(base + "/"):
                path = path[len(base) :]
            else:
                return self._ory_origin + path + query_fragment
        if self.default_redirect_url and path in self._welcome_paths:
            return self.default_redirect_url
        return self.public_ory + path + query_fragment

    # -- Headers ------------------------------------------------------------------

    def rewrite_response_headers(
        self, headers: list[tuple[str, str]], request_path: str
    ) -> list[tuple[str, str]]:
        """Ory's response headers with `Set-Cookie` and `Location` rewritten.

        Every other header, and every `Set-Cookie` as its own header, stays in order.
        """
        out = []
        for name, value in headers:
            lowered = name.lower()
            if lowered == "set-cookie":
                value = self.rewrite_set_cookie(value)
            elif lowered == "location":
                value = self.rewrite_location(value, request_path)
            out.append((name, value))
        return out

    # -- Bodies -------------------------------------------------------------------

    def is_textual(self, content_type: str) -> bool:
        """JSON (and `+json`), HTML, JavaScript, CSS and any `text/*`; binary otherwise."""
        media = content_type.partition(";")[0].strip().lower()
        return (
            media.startswith("text/")
            or media in TEXTUAL_TYPES
            or (media.startswith("application/") and media.endswith("+json"))
        )

    def is_rewritable(self, content_type: str, content_encoding: str) -> bool:
        """Whether `rewrite_body` would change this body (textual, identity or gzip).

        When true the caller must drop `Content-Length` (and may not trust an
        `ETag`): the rewritten body has another length.
        """
        return self.is_textual(content_type) and _encoding(content_encoding) is not None

    def rewrite_body(
        self, chunks: Iterable[bytes], content_type: str, content_encoding: str
    ) -> Iterator[bytes]:
        """Stream a textual body with the Ory URL (plain and JSON-escaped) replaced.

        Call it for textual bodies only (`is_textual`); the caller drops
        `Content-Length`. gzip bodies are inflated, rewritten and deflated again as
        they stream, in bounded memory. The proxy asks Ory for gzip or identity only,
        so any other `Content-Encoding` passes through untouched. The text is
        matched as bytes, which is right for UTF-8 and every ASCII-compatible
        charset. A few bytes (the length of the Ory URL) are held back at a time,
        so that a URL split across two chunks is still found.
        """
        encoding = _encoding(content_encoding)
        if encoding is None or not self.is_textual(content_type):
            return iter(chunks)
        if encoding == "gzip":
            return self._rewrite_gzip(chunks)
        return self._rewrite_plain(chunks)

    def _rewrite_plain(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        tail = b""
        for chunk in chunks:
            if not chunk:
                continue
            out, tail = self._rewrite_window(tail + chunk, final=False)
            if out:
                yield out
        if tail:
            yield self._rewrite_window(tail, final=True)[0]

    def _rewrite_gzip(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        inflate = _GzipInflater()
        deflate = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        tail = b""
        source = iter(chunks)
        # Until the first rewritten bytes leave, a body that turns out not to be gzip
        # can still go out exactly as Ory sent it.
        seen: list[bytes] | None = []
        for chunk in source:
            if not chunk:
                continue
            if seen is not None:
                seen.append(chunk)
            pieces = inflate.feed(chunk)
            while True:
                try:
                    piece = next(pieces, b"")
                except zlib.error as exc:
                    if seen is not None:
                        log.warning("ory_body_not_gzip: passed through untouched: %s", exc)
                        yield from seen
                        yield from source
                    else:
                        log.warning("ory_body_corrupt: gzip body from Ory cut short: %s", exc)
                    return
                if not piece:
                    break
                out, tail = self._rewrite_window(tail + piece, final=False)
                packed = deflate.compress(out) if out else b""
                if packed:
                    seen = None
                    yield packed
        if seen is not None and not seen:
            return
        if not inflate.eof:
            log.warning("ory_body_corrupt: gzip body from Ory ended early")
        tail += inflate.finish()
        final = self._rewrite_window(tail, final=True)[0] if tail else b""
        yield deflate.compress(final) + deflate.flush()

    def _rewrite_window(self, window: bytes, *, final: bool) -> tuple[bytes, bytes]:
        """Rewrite what can be decided in `window`; return it and the bytes held back."""
        limit = len(window) if final else len(window) - self._body_keep
        out = []
        position = 0
        replacements = self._body_replacements
        for match in self._body_pattern.finditer(window):
            if match.start() >= limit:
                break
            out.append(window[position : match.start()])
            out.append(replacements[match.group()])
            position = match.end()
        cut = max(position, limit)
        if position == 0:
            return window[:cut], window[cut:]
        out.append(window[position:cut])
        return b"".join(out), window[cut:]


def _authority_variants(scheme: str, netloc: str) -> frozenset[str]:
    """`host`, `host:port` spellings of one origin, lower case, default port or not."""
    authority = netloc.lower()
    default = ":443" if scheme.lower() == "https" else ":80"
    if authority.endswith(default):
        return frozenset({authority, authority.removesuffix(default)})
    if re.search(r":\d+$", authority):
        return frozenset({authority})
    return frozenset({authority, authority + default})


def _split_path(reference: str) -> tuple[str, str, str]:
    """(path, `?query`, `#fragment`) of a reference; the delimiters stay attached."""
    head, hash_, fragment = reference.partition("#")
    path, question, query = head.partition("?")
    return path, question + query, hash_ + fragment


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4 on an absolute path, with `%2e` counted as a dot like browsers do."""
    segments = path[1:].split("/")
    last = len(segments) - 1
    out: list[str] = []
    for index, segment in enumerate(segments):
        kind = _DOTS.get(segment.lower()) if len(segment) <= 6 else None
        if kind is None:
            out.append(segment)
            continue
        if kind == 2 and out:
            out.pop()
        if index == last:
            out.append("")
    return "/" + "/".join(out)


def _encoding(content_encoding: str) -> str | None:
    """`"gzip"`, `"identity"`, or None for an encoding this module does not rewrite."""
    coding = content_encoding.strip().lower()
    if coding in ("", "identity"):
        return "identity"
    if coding in ("gzip", "x-gzip"):
        return "gzip"
    return None


class _GzipInflater:
    """Inflates a gzip stream in bounded pieces, across concatenated gzip members."""

    def __init__(self) -> None:
        self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)

    @property
    def eof(self) -> bool:
        return self._inflate.eof

    def finish(self) -> bytes:
        """Whatever inflated output zlib still holds once the input has ended."""
        try:
            return self._inflate.flush()
        except zlib.error:
            return b""

    def feed(self, data: bytes) -> Iterator[bytes]:
        """The inflated bytes of `data`, at most BODY_CHUNK at a time (a zip bomb stays small)."""
        while data:
            piece = self._inflate.decompress(data, BODY_CHUNK)
            if piece:
                yield piece
            data = self._inflate.unconsumed_tail
            if self._inflate.eof and not data:
                data = self._inflate.unused_data
                if data:
                    self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
