"""Templates in access rules (SPEC §16): the part of Go's text/template that Oathkeeper
rule files use, parsed once at load into closures, evaluated per request.

- `compile_template(text, where=...)` parses at load. Anything outside the subset is a
  `TemplateError` (a `ConfigError`): one line naming `where`, what is unsupported and
  its column. Unknown fields of the session are caught here too, not per request.
- `Template.render(TemplateContext)` evaluates. No Python code from the rule file runs
  and no attribute is read by a name the file gives: the evaluator walks dicts, lists,
  strings, numbers, bools and None, and the fixed fields of the session, its match
  context, URL, query and headers through the tables in `fields`.
- A missing key renders empty at any depth, and so does data of the wrong shape (a
  field of a string, an index out of range): a render never fails on session data.
  Oathkeeper prints `<no value>` or fails the request in these cases.
- A render fails only past its limits (output size, `range` iterations), with
  `TemplateRenderError`; the pipeline answers that like any handler error (closed).
- Values print as Go's fmt prints them (`[a b]`, `map[k:v]`, `1e+06`); `toJson` is
  Go's encoding/json (sorted keys, `<`, `>` and `&` escaped).

Handlers compile each template setting once when the rules load and render it per
request: `compile_template(cfg["headers"]["X-User"], where='rule "r1" mutators[0]...')`,
with `json=True` for id_token claims and remote_json payloads (see `compile_template`).
`Template.constant` is set when the text has no actions. docs/rules-templates.md is
the reference for users.

The modules, in the order a template meets them: `parse` (text to tokens, errors with
columns), `pipelines` and `compile` (tokens to closures, checked at load), `evaluate`
(the closures' runtime), `context` and `fields` (the session's data and fixed
fields), `functions` (the function table), `gofmt`, `printf` and `gojson` (Go's
printing and encoding/json), `limits`.
"""

from __future__ import annotations

from ory_wsgi.rules.template import gojson
from ory_wsgi.rules.template.compile import Template, compile_template
from ory_wsgi.rules.template.context import HeaderSource as HeaderSource
from ory_wsgi.rules.template.context import MatchContext, RequestURL, TemplateContext
from ory_wsgi.rules.template.limits import MAX_OUTPUT as MAX_OUTPUT
from ory_wsgi.rules.template.limits import MAX_RANGE_STEPS as MAX_RANGE_STEPS
from ory_wsgi.rules.template.limits import TemplateRenderError
from ory_wsgi.rules.template.parse import TemplateError

__all__ = [
    "MatchContext",
    "RequestURL",
    "Template",
    "TemplateContext",
    "TemplateError",
    "TemplateRenderError",
    "compile_template",
]

# The tests hold the fast JSON encoder to the Go-exact one under these names.
_go_json = gojson.go_json
_to_json = gojson.to_json
