"""Error handlers (SPEC §16): how a refusal is answered, chosen per rule by `when`.

The engine tries the rule's `errors[]` in order (else `[errors] fallback`): the
first handler whose `matches(request, error, prepared)` holds turns the
`DecisionError` into the one to render with `answer(...)`: `json` (Kratos'
envelope), `redirect` (e.g. to the login page with `return_to`),
`www_authenticate` (HTTP Basic challenge). `when` clauses: `when.py`.
"""

from __future__ import annotations

from collections.abc import Callable

from ory_wsgi.pipeline.error_handlers.json import JsonErrorHandler
from ory_wsgi.pipeline.error_handlers.redirect import RedirectErrorHandler
from ory_wsgi.pipeline.error_handlers.www_authenticate import WwwAuthenticateErrorHandler
from ory_wsgi.pipeline.handler import ErrorHandler
from ory_wsgi.pipeline.services import Services

# Built once per rule set as `cls(services)`; then `prepare` once per rule.
ERROR_HANDLERS: dict[str, Callable[[Services], ErrorHandler]] = {
    "json": JsonErrorHandler,
    "redirect": RedirectErrorHandler,
    "www_authenticate": WwwAuthenticateErrorHandler,
}
