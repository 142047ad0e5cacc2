"""`ory-wsgi rules explain`: one request through the real pipeline, each step's conclusion shown.

    explanation = explain(settings, "GET", "https://app.example.com/admin",
                          headers=[("Cookie", "ory_kratos_session=x")], session=whoami_json)
    print(explanation.text, end=""); sys.exit(explanation.code)

The request is decided by the same `Pipeline` (registry, handlers, error
handlers) the proxy runs; nothing of the decision is re-implemented here.
What is added is only observation and a loopback stand-in:
- every handler of every rule is wrapped in `Traced`, which calls the real
  handler and writes down what it concluded (responsible or not, subject,
  allowed or refused and why, headers and cookies set);
- Ory's whoami is asked of a stand-in on 127.0.0.1 that answers `session`
  (the JSON whoami would answer for the request's cookie or token) or 401,
  unless `ory_url` names a real (or stand-in) Ory to ask instead;
- an authorizer that calls a service (`ory_permissions`, `remote_json`:
  `remote`: each service `Endpoint` in its prepared config) sends its request
  to that loopback stand-in instead, which records it and answers 200
  `{"allowed": true}`: the rendered request is shown, not sent, and the rest
  of the pipeline runs as if the service allowed. `call=True` sends it.
- the id_token mutator signs with a throw-away key (the claims are shown,
  not the token).
Exit code (`code`): 0 allowed (assuming services allow, when not called),
1 refused, 2 the configuration or the request cannot be explained.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import SplitResult, urlsplit

from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request, Response

from ory_wsgi.devserver import QuietRequestHandler
from ory_wsgi.errors import BadRequest, ConfigError
from ory_wsgi.keys import KeySet, new_key_set
from ory_wsgi.ory.cache import SessionCache
from ory_wsgi.ory.client import OryClient, extract_credentials, session_cookie_names
from ory_wsgi.ory.rewrite import OryRewriter
from ory_wsgi.paths import normalise_path
from ory_wsgi.pipeline.authenticators.session import KRATOS_UNAUTHORIZED, unauthorized
from ory_wsgi.pipeline.decision import Allow, Pipeline
from ory_wsgi.pipeline.errors import DecisionError, NotResponsible
from ory_wsgi.pipeline.registry import PreparedRule, Registry, Step, default_registry
from ory_wsgi.pipeline.request import request_facts
from ory_wsgi.pipeline.service_call import Endpoint
from ory_wsgi.pipeline.services import Services
from ory_wsgi.pipeline.shorthand import ShorthandIndex, shorthand_registry
from ory_wsgi.pipeline.state import AuthSession, RequestFacts
from ory_wsgi.rules.loader import load_rule_set
from ory_wsgi.rules.matcher import Matcher
from ory_wsgi.rules.model import AccessRule
from ory_wsgi.settings import Settings
from ory_wsgi.upstream.pool import UpstreamPool
from ory_wsgi.wsgi import StartResponse, WSGIEnvironment

ALLOWED, REFUSED, UNEXPLAINED = 0, 1, 2
STANDIN_ORY = "/.explain/ory"  # where the stand-in answers whoami; anything else is a service
VOLATILE_CLAIMS = ("iat", "nbf", "exp", "jti")  # left out so that the output is repeatable
INDENT = "  "
_NOT_SHOWN = frozenset({"host", "content-length", "connection", "accept-encoding"})


@dataclass(slots=True)
class Recorded:
    """A request a service authorizer would have sent."""

    method: str
    url: str
    headers: list[tuple[str, str]]
    body: bytes


@dataclass(slots=True)
class Explanation:
    text: str
    code: int


@dataclass(slots=True)
class _Notes:
    """What the traced handlers concluded, in order, and the requests they would send."""

    lines: list[str] = field(default_factory=list)
    services: list[Recorded] = field(default_factory=list)
    schemes: dict[str, str] = field(default_factory=dict)  # a service's host[:port] -> scheme
    dry_run: bool = True


class _StandIn:
    """Loopback Ory whoami (answers `session` or Kratos' 401) and service recorder."""

    def __init__(self, session: bytes | None, notes: _Notes) -> None:
        self.session = session
        self.notes = notes
        self._server: BaseWSGIServer = make_server(
            "127.0.0.1", 0, self, threaded=True, request_handler=QuietRequestHandler
        )
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        if request.path == STANDIN_ORY + "/sessions/whoami":
            if self.session is None:
                answer = Response(KRATOS_UNAUTHORIZED, 401, mimetype="application/json")
            else:
                answer = Response(self.session, 200, mimetype="application/json")
            return answer(environ, start_response)
        host = request.headers.get("Host", "")
        scheme = self.notes.schemes.get(host, "http")
        self.notes.services.append(
            Recorded(
                request.method,
                f"{scheme}://{host}{request.full_path.rstrip('?')}",
                [(k, v) for k, v in request.headers.items() if k.lower() not in _NOT_SHOWN],
                request.get_data(),
            )
        )
        body = json.dumps({"allowed": True})
        return Response(body, 200, mimetype="application/json")(environ, start_response)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class Traced:
    """A real handler, called as the pipeline calls it, whose conclusion is written down."""

    def __init__(self, kind: str, name: str, handler: Any, notes: _Notes) -> None:
        self.kind = kind
        self.name = name
        self.handler = handler
        self.notes = notes

    def _note(self, text: str) -> None:
        self.notes.lines.append(f"{INDENT}{self.kind:<14} {self.name}: {text}")

    def authenticate(self, request: RequestFacts, session: AuthSession, prepared: Any) -> None:
        try:
            self.handler.authenticate(request, session, prepared)
        except NotResponsible:
            self._note("not responsible" + _why_not(self.name, session))
            raise
        except DecisionError as error:
            self._note(f"responsible, refuses: {_refusal(error)}")
            raise
        self._note(f"responsible, subject {session.subject!r}")

    def authorize(self, request: RequestFacts, session: AuthSession, prepared: Any) -> None:
        sent = len(self.notes.services)
        try:
            self.handler.authorize(request, session, prepared)
        except DecisionError as error:
            self._services(sent)
            self._note(f"denies: {_refusal(error)}")
            raise
        if self._services(sent) and self.notes.dry_run:
            self._note("allows if the service allows (not asked: --call asks it)")
        else:
            self._note("allows")

    def _services(self, sent: int) -> bool:
        recorded = self.notes.services[sent:]
        for request in recorded:
            self._note(f"would send {request.method} {request.url}")
            for name, value in request.headers:
                self.notes.lines.append(f"{INDENT * 9}{name}: {value}")
            if request.body:
                self.notes.lines.append(f"{INDENT * 9}{request.body.decode(errors='replace')}")
        return bool(recorded)

    def mutate(self, request: RequestFacts, session: AuthSession, prepared: Any) -> None:
        headers, cookies = dict(session.header), dict(session.cookies)
        try:
            self.handler.mutate(request, session, prepared)
        except DecisionError as error:
            self._note(f"fails: {_refusal(error)}")
            raise
        changed = False
        for name, value in session.header.items():
            if headers.get(name) != value:
                changed = True
                self._note(f"header {name}: {_shown(name, value)}")
        for name, value in session.cookies.items():
            if cookies.get(name) != value:
                changed = True
                self._note(f"cookie {name}={value}")
        if not changed:
            self._note("no change")

    def __getattr__(self, name: str) -> Any:
        # prepare, and the error handlers' matches/answer: the handler's own.
        return getattr(self.handler, name)


class TracingRegistry:
    """The default registry, whose prepared rules run their handlers through `Traced`."""

    def __init__(self, registry: Registry, notes: _Notes, standin: str) -> None:
        self.registry = registry
        self.notes = notes
        self.standin = standin

    def __getattr__(self, name: str) -> Any:
        return getattr(self.registry, name)

    def prepare_rule(self, rule: AccessRule, *, trusted: bool = False) -> PreparedRule:
        prepared = self.registry.prepare_rule(rule, trusted=trusted)
        if prepared.invalid:
            return prepared
        return dataclasses.replace(
            prepared,
            authenticators=tuple(self._traced("authenticator", s) for s in prepared.authenticators),
            authorizer=prepared.authorizer and self._traced("authorizer", prepared.authorizer),
            mutators=tuple(self._traced("mutator", s) for s in prepared.mutators),
        )

    def _traced(self, kind: str, step: Step) -> Step:
        config = step.prepared
        if self.notes.dry_run and kind == "authorizer":
            config = self._to_recorder(config)
        return Step(step.name, Traced(kind, step.name, step.handler, self.notes), config)

    def _to_recorder(self, config: Any) -> Any:
        """`config` with each service `Endpoint` in it (nested ones too) sent to the loopback
        recorder, keeping its own target and Host header."""
        if not dataclasses.is_dataclass(config) or isinstance(config, type):
            return config
        if isinstance(config, Endpoint):
            target = config.pool.transport.target
            self.notes.schemes[target.netloc] = target.scheme
            return dataclasses.replace(config, pool=UpstreamPool(self.standin))
        changes = {}
        for member in dataclasses.fields(config):
            value = getattr(config, member.name)
            redirected = self._to_recorder(value)
            if redirected is not value:
                changes[member.name] = redirected
        return dataclasses.replace(config, **changes) if changes else config


def explain(
    settings: Settings,
    method: str,
    url: str,
    *,
    headers: Sequence[tuple[str, str]] = (),
    session: bytes | None = None,
    ory_url: str = "",
    call: bool = False,
) -> Explanation:
    """Decide `method url` with `headers` as the proxy would; raises ConfigError (exit 2)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{url}: expected an http(s) URL")
    method = method.upper()
    out: list[str] = []
    shorthand = not (settings.rule or settings.access_rules.repositories)
    try:
        path = normalise_path(parts.path or "/").match
        if shorthand:
            expected = ""
            out.append(f"{method} {parts.scheme}://{parts.netloc.lower()}{path}")
            out.append("rules: [[protect]] / [[public]] (no access rules are configured)")
        else:
            expected = _match(Matcher(load_rule_set(settings)), method, parts, path, out)
            if not expected:
                return Explanation(_text(out), REFUSED)
    except BadRequest as exc:
        raise ConfigError(f"{url}: the request is refused (400): {exc}") from None

    environ = _environ(method, url, headers)
    cookie_names = session_cookie_names(
        settings.ory_url, settings.ory.project, settings.ory.session_cookie
    )
    credentials = extract_credentials(environ, cookie_names)
    if credentials is not None and session is None and not ory_url:
        raise ConfigError(
            "the request carries a session cookie or token: give --session FILE (what"
            " Ory's whoami answers for it) or --ory URL (an Ory to ask)"
        )
    if session is not None and credentials is None:
        out.append("note: --session is not used: the request carries no session cookie or token")
    notes = _Notes(dry_run=not call)
    standin = _StandIn(session, notes)
    try:
        with _throwaway_keys(settings) as keys:
            ory = ory_url or standin.url + STANDIN_ORY
            pipeline = _pipeline(settings, keys, cookie_names, ory, notes, standin.url)
            try:
                facts = request_facts(environ)
            except BadRequest as exc:
                raise ConfigError(f"{url}: the request is refused (400): {exc}") from None
            decision = pipeline.decide(facts)
            return _report(out, notes, decision, facts, pipeline, expected)
    finally:
        standin.stop()


def _match(matcher: Matcher, method: str, parts: SplitResult, path: str, out: list[str]) -> str:
    """Each rule's verdict on the request; the id of the one that matches ("" when none does)."""
    explanation = matcher.explain(method, parts.scheme, parts.netloc, path)
    out.append(f"{method} {explanation.url}")
    for verdict in explanation.verdicts:
        out.append(
            f"{INDENT}{verdict.outcome:<14} {verdict.rule.id}  ({verdict.rule.source}):"
            f" {verdict.reason}"
        )
    selected = explanation.selected
    if selected is None:
        out.append("no rule matches: the request is answered 404 (403 on the decisions endpoint)")
        return ""
    groups = f"; capture groups {list(selected.capture_groups)}" if selected.capture_groups else ""
    out.append(f"rule: {selected.rule.id}{groups}")
    return selected.rule.id


def _report(
    out: list[str],
    notes: _Notes,
    decision: Any,
    facts: RequestFacts,
    pipeline: Pipeline,
    expected: str,
) -> Explanation:
    rule = decision.rule
    if rule is not None and not expected:
        out.append(f"rule: {rule.id}")
    elif rule is not None and rule.id != expected:
        out.append(
            f"note: rule {rule.id!r} governs instead: another reading of this path or a"
            " claimed method matches it, and it is stricter"
        )
    out.extend(notes.lines)
    if isinstance(decision, Allow):
        upstream = decision.upstream.url or "[proxy] upstream"
        assumed = " (assuming the service allows)" if notes.services and notes.dry_run else ""
        out.append(f"decision: allow{assumed}, forwarded to {upstream}")
        loaded = pipeline.loaded()
        prepared = loaded.prepared.get(rule.id) if loaded is not None else None
        for error in (unauthorized(), DecisionError(403, "forbidden", "Access is denied.")):
            name, answer = _answering(pipeline, prepared, facts, error)
            out.append(
                f"{INDENT}a refusal {error.status} {error.error_id} would be answered by"
                f" error handler {name}: {_answer(answer)}"
            )
        return Explanation(_text(out), ALLOWED)
    cause, error = decision.cause, decision.error
    if rule is not None and rule.invalid:
        out.append(f"error: the rule is invalid, every request it governs gets 500: {rule.invalid}")
        return Explanation(_text(out), UNEXPLAINED)
    handler = decision.handler or "none (the refusal as it is)"
    out.append(f"decision: deny, {_refusal(cause)}")
    out.append(f"{INDENT}answered by error handler {handler}: {_answer(error)}")
    return Explanation(_text(out), REFUSED)


def _answering(
    pipeline: Pipeline, prepared: PreparedRule | None, facts: RequestFacts, error: DecisionError
) -> tuple[str, DecisionError]:
    """Which of the rule's error handlers (else `[errors] fallback`, else json) takes `error`."""
    steps = prepared.errors if prepared is not None and prepared.errors else None
    for step in steps or pipeline.registry.fallback:
        if step.handler.matches(facts, error, step.prepared):
            return step.name, step.handler.answer(facts, error, step.prepared)
    json_step = pipeline.registry.default_step("errors", "json")
    if json_step is None:
        return "none", error
    return "json", json_step.handler.answer(facts, error, json_step.prepared)


def _pipeline(
    settings: Settings,
    keys: KeySet | None,
    cookie_names: frozenset[str],
    ory_url: str,
    notes: _Notes,
    standin: str,
) -> Pipeline:
    from ory_wsgi.app import public_url

    public = public_url(settings)
    services = Services(
        settings=settings,
        public_url=public,
        keys=keys,
        client=OryClient(
            ory_url,
            timeout=settings.ory.timeout,
            api_key=settings.ory.api_key,
            base_url_rewrite=public + "/.ory",
        ),
        cache=SessionCache(),
        cookie_names=cookie_names,
        rewriter=OryRewriter(settings.ory_url, public) if settings.ory_url else None,
    )
    if not (settings.rule or settings.access_rules.repositories):
        index = ShorthandIndex(settings)
        registry = shorthand_registry(services)
        tracing = cast(Registry, TracingRegistry(registry, notes, standin))
        return Pipeline(tracing, lambda: index, trusted=True)
    registry = default_registry(services)
    tracing = cast(Registry, TracingRegistry(registry, notes, standin))
    matcher = Matcher(load_rule_set(settings, validate=registry.validate))
    return Pipeline(tracing, lambda: matcher, no_match_status=settings.access_rules.no_match_status)


@contextmanager
def _throwaway_keys(settings: Settings) -> Iterator[KeySet | None]:
    """A key set of one new key, for id_token mutators to sign with; None without [jwt]."""
    if not settings.jwt.enabled:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="ory-wsgi-explain-") as directory:
        path = os.path.join(directory, "jwks.json")
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(new_key_set())
        yield KeySet.load(path)


def _environ(method: str, url: str, headers: Sequence[tuple[str, str]]) -> WSGIEnvironment:
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    builder = EnvironBuilder(
        method=method,
        base_url=f"{parts.scheme}://{parts.netloc}",
        headers=list(headers),
        environ_base={"REMOTE_ADDR": "127.0.0.1"},
    )
    try:
        environ = builder.get_environ()
    finally:
        builder.close()
    # The request line as written: the pipeline reads (and normalises) it, never PATH_INFO.
    environ["RAW_URI"] = environ["REQUEST_URI"] = target
    environ["HTTP_HOST"] = parts.netloc
    return environ


def _why_not(name: str, session: AuthSession) -> str:
    if session.ory_error:
        return f" (optional, and Ory answered {session.ory_error})"
    if name == "cookie_session":
        return " (no session cookie)"
    if name == "bearer_token":
        return " (no Authorization: Bearer or X-Session-Token)"
    if name == "anonymous":
        return " (the request carries Authorization)"
    return ""


def _refusal(error: DecisionError) -> str:
    reason = f" ({error.reason})" if error.reason else ""
    return f"{error.status} {error.error_id}{reason}"


def _answer(error: DecisionError) -> str:
    shown = [f"{name}: {value}" for name, value in error.headers if name.lower() != "content-type"]
    return f"{error.status}" + (f", {'; '.join(shown)}" if shown else "")


def _shown(name: str, value: str) -> str:
    """A header's value; a JWT as its claims (the token is signed with a throw-away key)."""
    token = value.removeprefix("Bearer ")
    if name.lower() != "authorization" or token.count(".") != 2:
        return value
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except ValueError:
        return value
    if not isinstance(claims, dict):
        return value
    ttl = ""
    if isinstance(claims.get("exp"), int) and isinstance(claims.get("iat"), int):
        ttl = f", ttl {claims['exp'] - claims['iat']}s"
    for key in VOLATILE_CLAIMS:
        claims.pop(key, None)
    return f"Bearer <id_token{ttl}> {json.dumps(claims, sort_keys=True)}"


def _text(lines: list[str]) -> str:
    return "\n".join(lines) + "\n"
