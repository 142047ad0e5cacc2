"""`[[protect]]`, `[[public]]`, `--protect-path-prefix` and "no rules at all", as access rules.

    index = ShorthandIndex(settings)
    pipeline = Pipeline(shorthand_registry(services), lambda: index, trusted=True)

Each `[[protect]]` entry is a rule with `cookie_session` + `bearer_token`
(`required_aal` from its `aal`), `allow`, and `id_token` with
`only_with_session` (`noop` with `[jwt] enabled = false`). Each
`[[public]]` entry, and the catch-all for every other path, is the
optional session of SPEC §7: the same two authenticators with
`optional = true` (a refused credential, or Ory down or rate-limiting, goes
on anonymously), then `noop`. They are not matched by
`ory_wsgi.rules.matcher` but by `ory_wsgi.paths.PathRules`, unchanged, so
every guarantee `[[protect]]` gave holds: protect prefixes ignore case and
end at a segment boundary, public exceptions match their exact spelling, the
most specific entry wins and ties go to protect, `methods` (HEAD under GET)
include methods claimed by override headers, a path is protected when any
reading of it is, and a suspicious spelling near a protected area is 400.

The shorthand's error handler is `ory_proxy` (ours, registered only here):
no session and a browser navigating (GET/HEAD preferring HTML) → 303 to
`<public>/.ory/self-service/login/browser?return_to=<this page>`; anything
else is answered as the authenticator put it (Kratos' whoami 401 byte for
byte with `WWW-Authenticate: Bearer`, the step-up 403, 503, 429).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from ory_wsgi.errors import ConfigError
from ory_wsgi.paths import CompiledRule, PathRules
from ory_wsgi.pipeline.authenticators.session import navigating, return_to_url
from ory_wsgi.pipeline.errors import DecisionError
from ory_wsgi.pipeline.handler import Config
from ory_wsgi.pipeline.registry import Registry, default_registry
from ory_wsgi.pipeline.services import Services
from ory_wsgi.pipeline.state import RequestFacts
from ory_wsgi.rules.matcher import MatchResult
from ory_wsgi.rules.model import AccessRule, Handler, RuleSet
from ory_wsgi.settings import Rule, Settings

DEFAULT_ID = "public"
SESSION_AUTHENTICATORS = ("cookie_session", "bearer_token")


class ProxyErrors:
    """`ory_proxy`: how `ory proxy` answers a refusal on a `[[protect]]` path."""

    name = "ory_proxy"

    def __init__(self, services: Services) -> None:
        self.public_url = services.public_url
        self.login_url = f"{services.public_url}/.ory/self-service/login/browser"

    def prepare(self, config: Config, where: str) -> None:
        if config:
            raise ConfigError(f"{where}: takes no config")

    def matches(self, request: RequestFacts, error: DecisionError, prepared: Any) -> bool:
        return True

    def answer(self, request: RequestFacts, error: DecisionError, prepared: Any) -> DecisionError:
        if error.error_id != "unauthorized" or not navigating(request):
            return error
        return_to = quote(return_to_url(self.public_url, request.target), safe="")
        return DecisionError(
            303,
            "unauthorized",
            "Log in to see this page.",
            headers=[("Location", f"{self.login_url}?return_to={return_to}")],
            body=b"",
            content_type="",
        )


def shorthand_registry(services: Services) -> Registry:
    """Every handler, plus the shorthand's own `ory_proxy` error handler."""
    return default_registry(services, extra={"errors": {ProxyErrors.name: ProxyErrors}})


def mutators(jwt_enabled: bool) -> tuple[Handler, ...]:
    """The JWT of a Kratos session (§8), and nothing for an anonymous request."""
    if jwt_enabled:
        return (Handler("id_token", {"only_with_session": True}),)
    return (Handler("noop"),)


def protect_rule(rule: Rule, index: int, mutator: tuple[Handler, ...]) -> AccessRule:
    config = {"required_aal": rule.aal} if rule.aal else {}
    return AccessRule(
        id=f"protect-{index}",
        source=f"[[protect]] #{index}",
        description=_describe(rule),
        authenticators=tuple(Handler(name, config) for name in SESSION_AUTHENTICATORS),
        authorizer=Handler("allow"),
        mutators=mutator,
        errors=(Handler(ProxyErrors.name),),
    )


def public_rule(
    rule_id: str, source: str, description: str, mutator: tuple[Handler, ...]
) -> AccessRule:
    optional = {"optional": True}
    return AccessRule(
        id=rule_id,
        source=source,
        description=description,
        authenticators=(
            *(Handler(name, optional) for name in SESSION_AUTHENTICATORS),
            Handler("noop"),
        ),
        authorizer=Handler("allow"),
        mutators=mutator,
        errors=(Handler(ProxyErrors.name),),
    )


class ShorthandIndex:
    """The `RuleIndex` of the shorthand: `PathRules` decides, an `AccessRule` says how."""

    def __init__(self, settings: Settings) -> None:
        mutator = mutators(settings.jwt.enabled)
        self.paths = PathRules(settings.protect, settings.public)
        by_rule: dict[int, MatchResult] = {}
        self._compiled = {id(compiled.rule): compiled for compiled in self.paths.rules}
        self._by_id: dict[str, CompiledRule] = {}
        rules: list[AccessRule] = []
        for index, rule in enumerate(settings.protect, 1):
            access = protect_rule(rule, index, mutator)
            rules.append(access)
            self._by_id[access.id] = self._compiled[id(rule)]
            by_rule[id(rule)] = MatchResult(access)
        for index, rule in enumerate(settings.public, 1):
            access = public_rule(
                f"public-{index}", f"[[public]] #{index}", _describe(rule), mutator
            )
            rules.append(access)
            by_rule[id(rule)] = MatchResult(access)
        default = public_rule(
            DEFAULT_ID, "every other path", "no [[protect]] entry covers it", mutator
        )
        rules.append(default)
        self.rule_set = RuleSet(tuple(rules), default_rule=DEFAULT_ID)
        self._by_rule = by_rule
        self._default = MatchResult(default, (), True)

    def resolve(self, facts: RequestFacts, strictness: Any = None) -> MatchResult | None:
        governing = self.paths.governing(facts.path, facts.methods)
        if governing is not None:
            return self._result(governing)
        found = self.paths.find(facts.path.match, facts.method)
        return self._result(found) if found is not None else self._default

    def refuses(self, facts: RequestFacts, strictness: Any = None) -> bool:
        return self.paths.refuses(facts.path)

    def compiled(self, rule_id: str) -> CompiledRule | None:
        """The `[[protect]]` entry behind a rule (`environ["ory.rule"]`), None for open ones."""
        return self._by_id.get(rule_id)

    def _result(self, compiled: CompiledRule) -> MatchResult:
        return self._by_rule[id(compiled.rule)]


def _describe(rule: Rule) -> str:
    what = (
        f"prefix {rule.prefix}"
        if rule.prefix
        else f"glob {rule.glob}"
        if rule.glob
        else f"regex {rule.regex}"
    )
    methods = f" ({', '.join(rule.methods)})" if rule.methods else ""
    aal = f", {rule.aal}" if rule.aal else ""
    return what + methods + aal
