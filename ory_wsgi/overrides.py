"""Headers with which a request claims another method or path than its request line's.

    methods = request_methods(environ)     # ("POST", "DELETE") for X-HTTP-Method-Override: DELETE

A method-limited rule must see every method a framework behind the proxy
could act on (Rails, Laravel, Express and Symfony honour the method headers);
the path headers (old Symfony, Zend, ASP.NET route by them) are removed
before the request goes on, so that the path checked is the only one.
"""

from __future__ import annotations

from ory_wsgi.wsgi import WSGIEnvironment

METHOD_OVERRIDE_KEYS = (
    "HTTP_X_HTTP_METHOD_OVERRIDE",
    "HTTP_X_HTTP_METHOD",
    "HTTP_X_METHOD_OVERRIDE",
)
PATH_OVERRIDE_KEYS = ("HTTP_X_ORIGINAL_URL", "HTTP_X_REWRITE_URL")


def request_methods(environ: WSGIEnvironment) -> tuple[str, ...]:
    """The request's method and every method it claims through an override header.

    A header may list several (`POST, GET`), and servers join repeated headers
    with commas: each one counts, whichever a framework would pick.
    """
    method: str = environ["REQUEST_METHOD"]
    claimed = [
        part.strip()
        for key in METHOD_OVERRIDE_KEYS
        if key in environ
        for part in str(environ[key]).split(",")
    ]
    return (method, *(part for part in claimed if part))
