"""`Pipeline.decide(facts)`: the one decision every mode takes (SPEC §16).

    pipeline = Pipeline(registry, source.current)      # or shorthand_rules(settings)
    decision = pipeline.decide(request_facts(environ))
    if isinstance(decision, Allow): forward to decision.upstream with decision.headers
    else: return decision.error(environ, start_response)

Steps: match a rule, run its authenticators (the first responsible one wins;
none responsible is 401), its authorizer, its mutators in order; any
`DecisionError` on the way is handed to the rule's error handlers (or
`[errors] fallback`), the first whose `when` accepts it answers, and `json`
answers when none does. A refusal below 400 (a login redirect an
authenticator decided) is answered as it is.

Matching. The normalised reading of the path (`views[0]`) is matched. A
path has other readings (`;params`, unresolved `..`, ...) that less lenient
applications see, and a request may claim other methods through override
headers; when one of those matches a different rule, the stricter rule
applies (an invalid rule, then `deny`/`unauthorized`, then one that needs a
credential, then one that lets anybody in; at equal strictness the
canonical reading's). So a path is protected when any reading of it is, as
`[[protect]]` always guaranteed. A suspicious spelling (`%2F`, `%00`, `\\`,
...) near a rule that needs a credential is refused with 400. No rule: 404
(`[access_rules] no_match_status`, 403 allowed); the decisions endpoint maps it to 403.

Rules come from a `source()` callable returning the current `Matcher` (or
the `[[protect]]` shorthand's index) each request; the rules of a new one are
prepared once, on the first request that sees it, and swapped in whole.

Hot path. A rule whose handlers cannot do anything for a request without a
credential (session authenticators, which are not responsible without one,
then `noop`; `allow`; `noop` or `id_token` with `only_with_session`) is
marked at load; a request the adapter found without any session credential
(`RequestFacts.anonymous`) is allowed there without running the handlers,
with the outcome running them would give.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ory_wsgi.errors import BadRequest
from ory_wsgi.paths import lenient_match_paths
from ory_wsgi.pipeline.authenticators.noop import Noop
from ory_wsgi.pipeline.authenticators.session import BearerToken, CookieSession, unauthorized
from ory_wsgi.pipeline.authorizers.allow import Allow as AllowAuthorizer
from ory_wsgi.pipeline.errors import DecisionError, NotResponsible, internal
from ory_wsgi.pipeline.mutators.id_token import IdTokenMutator, PreparedIdToken
from ory_wsgi.pipeline.mutators.noop import NoopMutator
from ory_wsgi.pipeline.registry import PreparedRule, Registry, Step
from ory_wsgi.pipeline.state import AuthSession, RequestFacts, RequestState
from ory_wsgi.rules.matcher import Matcher, MatchResult
from ory_wsgi.rules.model import AccessRule, RuleSet, Upstream
from ory_wsgi.rules.template import MatchContext, RequestURL, TemplateRenderError

log = logging.getLogger("ory_wsgi.pipeline")

# How strict a rule is, for choosing between readings of one path (higher wins).
OPEN, CREDENTIAL, REFUSING, INVALID = 1, 2, 3, 4
ANONYMOUS_AUTHENTICATORS = frozenset({"anonymous", "noop"})
REFUSING_AUTHENTICATORS = frozenset({"unauthorized"})
NO_RULE = "No access rule matches this request."


@dataclass(frozen=True, slots=True)
class Allow:
    """Forward to `upstream` (empty url: `[proxy] upstream`) with the mutators' `headers`."""

    rule: AccessRule
    upstream: Upstream
    headers: dict[str, str]
    cookies: dict[str, str]
    session: AuthSession
    state: RequestState
    protected: bool = False  # the rule needs a credential (protected_cache_control applies)


@dataclass(frozen=True, slots=True)
class Deny:
    """Answer `error` (a WSGI app). `cause` is the refusal before the error handler
    turned it into `error`; `handler` names that error handler ("" when none did)."""

    error: DecisionError
    cause: DecisionError
    handler: str
    rule: AccessRule | None
    state: RequestState


Decision = Allow | Deny


class RuleIndex(Protocol):
    """What picks the rule for a request: a compiled `Matcher`, or the shorthand's index."""

    rule_set: RuleSet

    def resolve(
        self, facts: RequestFacts, strictness: Callable[[AccessRule], int]
    ) -> MatchResult | None:
        """The governing rule; raises BadRequest for a request that must not be matched."""

    def refuses(self, facts: RequestFacts, strictness: Callable[[AccessRule], int]) -> bool:
        """Whether a suspicious spelling comes near a rule that needs a credential."""


class MatcherIndex:
    """Oathkeeper rules: the normalised reading matched, the other readings checked."""

    def __init__(self, matcher: Matcher) -> None:
        self.matcher = matcher
        self.rule_set = matcher.rule_set
        self.methods = tuple(
            dict.fromkeys(
                m for rule in self.rule_set.rules if rule.match for m in rule.match.methods
            )
        )

    def resolve(
        self, facts: RequestFacts, strictness: Callable[[AccessRule], int]
    ) -> MatchResult | None:
        match = self.matcher.match
        views = facts.path.views
        best = match(facts.method, facts.scheme, facts.host, views[0])
        if len(views) == 1 and len(facts.methods) == 1:
            return best
        rank = REFUSING if best is None else strictness(best.rule)
        for method in facts.methods:
            for view in views:
                other = match(method, facts.scheme, facts.host, view)
                if other is None or (best is not None and other.rule is best.rule):
                    continue
                other_rank = strictness(other.rule)
                if other_rank > rank:
                    best, rank = other, other_rank
        return best

    def refuses(self, facts: RequestFacts, strictness: Callable[[AccessRule], int]) -> bool:
        if not facts.path.suspicious:
            return False
        readings = (*facts.path.views, *lenient_match_paths(facts.path.path))
        for method in self.methods:
            for reading in readings:
                try:
                    found = self.matcher.match(method, facts.scheme, facts.host, reading)
                except BadRequest:
                    return True
                if found is not None and not found.default and strictness(found.rule) >= CREDENTIAL:
                    return True
        return False


@dataclass(frozen=True, slots=True)
class _Loaded:
    source: object
    index: RuleIndex
    prepared: dict[str, PreparedRule]
    ranks: dict[str, int]
    # Rules an anonymous request passes without running a handler (see `quiet`).
    quiet: frozenset[str]

    def strictness(self, rule: AccessRule) -> int:
        return self.ranks.get(rule.id, INVALID)


class Pipeline:
    """Decides requests; one per process (or worker), safe across threads."""

    def __init__(
        self,
        registry: Registry,
        source: Callable[[], Matcher | RuleIndex | None],
        *,
        no_match_status: int = 404,
        trusted: bool = False,
    ) -> None:
        self.registry = registry
        self.source = source
        self.no_match_status = no_match_status
        self.trusted = trusted  # rules we built (shorthand): handlers need not be enabled
        self._loaded: _Loaded | None = None
        self._json: Step | None = None
        if "json" in registry.error_handlers:
            self._json = registry.default_step("errors", "json")

    def loaded(self) -> _Loaded | None:
        current = self.source()
        if current is None:
            return None
        loaded = self._loaded
        if loaded is None or loaded.source is not current:
            loaded = self._prepare(current)
            # One attribute store: threads see the old set or the new one, never half.
            self._loaded = loaded
        return loaded

    def _prepare(self, current: Matcher | RuleIndex) -> _Loaded:
        index: RuleIndex = MatcherIndex(current) if isinstance(current, Matcher) else current
        prepared = {
            rule.id: self.registry.prepare_rule(rule, trusted=self.trusted)
            for rule in index.rule_set.rules
        }
        ranks = {rule_id: strictness(rule) for rule_id, rule in prepared.items()}
        for rule in prepared.values():
            if rule.invalid:
                log.error("invalid_rule: %s", rule.invalid)
        quiet = frozenset(rule_id for rule_id, rule in prepared.items() if _quiet(rule))
        return _Loaded(current, index, prepared, ranks, quiet)

    def decide(self, facts: RequestFacts) -> Decision:
        state = RequestState()
        loaded = self.loaded()
        if loaded is None:
            error = DecisionError(
                503,
                "rules_not_loaded",
                "No valid access rules are loaded yet.",
                headers=[("Retry-After", "5")],
            )
            return self._deny(facts, error, None, state)
        try:
            if loaded.index.refuses(facts, loaded.strictness):
                raise BadRequest("the path has an encoded '/', '\\', '#', '%' or NUL")
            found = loaded.index.resolve(facts, loaded.strictness)
        except BadRequest as exc:
            log.warning("bad_request: %s: %r", exc, facts.target[:200])
            error = DecisionError(400, "bad_request", f"Malformed request: {exc}.")
            return self._deny(facts, error, None, state)
        if found is None:
            error = DecisionError(self.no_match_status, "no_rule", NO_RULE)
            return self._deny(facts, error, None, state)
        prepared = loaded.prepared.get(found.rule.id)
        state.rule_id = found.rule.id
        if prepared is None or prepared.invalid:
            log.error(
                "invalid_rule: refusing %s: %s", facts.target[:200], prepared and prepared.invalid
            )
            return self._deny(
                facts, internal("The access rule for this request is invalid."), prepared, state
            )
        session = AuthSession(
            match=MatchContext(
                regexp_capture_groups=found.capture_groups,
                url=RequestURL(
                    scheme=facts.scheme,
                    host=facts.host,
                    path=facts.path.match,
                    raw_query=facts.query,
                    raw_path=facts.path.path,
                ),
                method=facts.method,
                header=facts.headers,
            )
        )
        rule = prepared.rule
        if facts.anonymous and rule.id in loaded.quiet:
            # What running the rule would give: noop accepted, nothing set.
            session.authenticator = "noop"
            state.decision = "allow"
            state.upstream = rule.upstream.url
            state.strip_path = rule.upstream.strip_path
            state.rule_upstream = rule.upstream
            return Allow(rule, rule.upstream, session.header, session.cookies, session, state)
        try:
            self._run(facts, session, prepared)
        except DecisionError as error:
            state.subject = session.subject
            state.session = session.ory_session
            return self._deny(facts, error, prepared, state)
        except TemplateRenderError as exc:
            log.error("template_error: %s: %s", prepared.rule.where, exc)
            return self._deny(
                facts, internal("A handler of this access rule failed."), prepared, state
            )
        state.decision = "allow"
        state.subject = session.subject
        state.session = session.ory_session
        state.upstream = prepared.rule.upstream.url
        state.strip_path = prepared.rule.upstream.strip_path
        state.rule_upstream = prepared.rule.upstream
        return Allow(
            prepared.rule,
            prepared.rule.upstream,
            session.header,
            session.cookies,
            session,
            state,
            loaded.strictness(prepared.rule) >= CREDENTIAL,
        )

    def _run(self, facts: RequestFacts, session: AuthSession, prepared: PreparedRule) -> None:
        for step in prepared.authenticators:
            try:
                step.handler.authenticate(facts, session, step.prepared)
            except NotResponsible:
                continue
            break
        else:
            raise _nobody()
        assert prepared.authorizer is not None  # an invalid rule never gets here
        prepared.authorizer.handler.authorize(facts, session, prepared.authorizer.prepared)
        for step in prepared.mutators:
            step.handler.mutate(facts, session, step.prepared)

    def _deny(
        self,
        facts: RequestFacts,
        error: DecisionError,
        prepared: PreparedRule | None,
        state: RequestState,
    ) -> Deny:
        state.decision = "deny"
        state.error = error.error_id
        rule = prepared.rule if prepared is not None else None
        if error.status < 400:
            return Deny(error, error, "", rule, state)
        steps = (
            prepared.errors if prepared is not None and prepared.errors else self.registry.fallback
        )
        for step in steps:
            if step.handler.matches(facts, error, step.prepared):
                return Deny(
                    step.handler.answer(facts, error, step.prepared), error, step.name, rule, state
                )
        if self._json is not None:
            step = self._json
            return Deny(
                step.handler.answer(facts, error, step.prepared), error, step.name, rule, state
            )
        return Deny(error, error, "", rule, state)


def _nobody() -> DecisionError:
    """No authenticator was responsible: Kratos' 401, as a request without a session gets."""
    return unauthorized()


_SESSION_AUTHENTICATORS = (CookieSession, BearerToken)


def _quiet(prepared: PreparedRule) -> bool:
    """Whether running this rule for a request without a credential always ends
    in an allow with nothing set: session authenticators (never responsible
    without a credential) then `noop`, `allow`, and mutators that do nothing
    without a Kratos session. Exact types: a subclass may behave otherwise."""
    if prepared.invalid or prepared.authorizer is None:
        return False
    for step in prepared.authenticators:
        if type(step.handler) in _SESSION_AUTHENTICATORS:
            continue
        if type(step.handler) is not Noop:
            return False
        break
    else:
        return False  # nobody responsible: a 401
    if type(prepared.authorizer.handler) is not AllowAuthorizer:
        return False
    for step in prepared.mutators:
        if type(step.handler) is NoopMutator:
            continue
        if (
            type(step.handler) is IdTokenMutator
            and isinstance(step.prepared, PreparedIdToken)
            and step.prepared.only_with_session
        ):
            continue
        return False
    return True


def strictness(prepared: PreparedRule) -> int:
    """How much a rule refuses, for choosing between the readings of one path."""
    if prepared.invalid:
        return INVALID
    names = {step.name for step in prepared.authenticators}
    if names <= REFUSING_AUTHENTICATORS or (
        prepared.authorizer and prepared.authorizer.name == "deny"
    ):
        return REFUSING
    if names & ANONYMOUS_AUTHENTICATORS:
        return OPEN
    return CREDENTIAL
