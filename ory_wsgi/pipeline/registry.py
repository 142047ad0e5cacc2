"""Handlers by kind and name, their global config, and each rule's handlers prepared once.

    registry = default_registry(services)          # or Registry(services, authenticators=...)
    rule_set = load_rule_set(settings, validate=registry.validate)
    prepared = registry.prepare_rule(rule)           # PreparedRule, once per rule per load

A handler is usable in a rule when its kind's dict has the name and the
settings enable it (`[authenticators.<name>] enabled = true`, likewise
`[authorizers.<name>]`, `[mutators.<name>]`, `[errors.handlers.<name>]`), as
in Oathkeeper. The rule's `config` is merged key by key over the global
`config` (a rule's key replaces the global key whole), then the handler's
`prepare(config, where)` checks it and compiles what it needs. An unknown or
disabled handler, or a `prepare` that raises `ConfigError`, makes the rule
invalid: `validate` returns the one line that says why (naming the rule and
the handler), the loader keeps the rule so that it still matches, and the
pipeline answers 500 for it (closed).

Rules we build ourselves (the `[[protect]]` shorthand, `trusted=True`) do not
need their handlers enabled: an `ory proxy` setup has no handler tables.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ory_wsgi.errors import ConfigError
from ory_wsgi.pipeline.services import Services
from ory_wsgi.rules.model import AccessRule, Handler
from ory_wsgi.rules.template import TemplateError
from ory_wsgi.settings import HandlerSettings

log = logging.getLogger("ory_wsgi.rules")

KINDS = ("authenticators", "authorizers", "mutators", "errors")


@dataclass(frozen=True, slots=True)
class Step:
    """One handler of one rule: the shared instance and what its `prepare` returned."""

    name: str
    handler: Any
    prepared: Any


@dataclass(frozen=True, slots=True)
class PreparedRule:
    """A rule's handlers, ready for requests; `invalid` is the load-time reason it fails closed."""

    rule: AccessRule
    authenticators: tuple[Step, ...] = ()
    authorizer: Step | None = None
    mutators: tuple[Step, ...] = ()
    errors: tuple[Step, ...] = ()
    invalid: str = ""


@dataclass(slots=True)
class Registry:
    """The handler classes of the four kinds, instantiated once with `services`."""

    services: Services
    authenticators: Mapping[str, type[Any]]
    authorizers: Mapping[str, type[Any]]
    mutators: Mapping[str, type[Any]]
    error_handlers: Mapping[str, type[Any]]
    _instances: dict[tuple[str, str], Any] = field(default_factory=dict)
    fallback: tuple[Step, ...] = ()
    fallback_error: str = ""

    def __post_init__(self) -> None:
        settings = self.services.settings
        steps = []
        for name in settings.errors.fallback:
            try:
                steps.append(
                    self._step("errors", Handler(name), "[errors] fallback", trusted=False)
                )
            except ConfigError as exc:
                # The fallback answers every refusal: one broken entry is left out, loudly.
                self.fallback_error = str(exc)
                log.error("%s", exc)
        self.fallback = tuple(steps)

    def classes(self, kind: str) -> Mapping[str, type[Any]]:
        return {
            "authenticators": self.authenticators,
            "authorizers": self.authorizers,
            "mutators": self.mutators,
            "errors": self.error_handlers,
        }[kind]

    def global_settings(self, kind: str, name: str) -> HandlerSettings | None:
        settings = self.services.settings
        tables: Mapping[str, HandlerSettings] = (
            settings.errors.handlers if kind == "errors" else getattr(settings, kind)
        )
        return tables.get(name)

    def instance(self, kind: str, name: str) -> Any:
        key = (kind, name)
        handler = self._instances.get(key)
        if handler is None:
            handler = self._instances[key] = self.classes(kind)[name](self.services)
        return handler

    def _step(self, kind: str, step: Handler, where: str, *, trusted: bool) -> Step:
        label = "errors.handlers" if kind == "errors" else kind
        where = f"{where}: {kind[:-1] if kind != 'errors' else 'error handler'} {step.handler!r}"
        classes = self.classes(kind)
        if step.handler not in classes:
            known = ", ".join(sorted(classes)) or "none"
            raise ConfigError(f"{where}: unknown handler (known: {known})")
        table = self.global_settings(kind, step.handler)
        if not trusted and (table is None or not table.enabled):
            raise ConfigError(f"{where}: not enabled ([{label}.{step.handler}] enabled = true)")
        config = merge(table.config if table else {}, step.config)
        handler = self.instance(kind, step.handler)
        try:
            prepared = handler.prepare(config, where)
        except TemplateError as exc:
            raise ConfigError(str(exc)) from None
        return Step(step.handler, handler, prepared)

    def prepare_rule(self, rule: AccessRule, *, trusted: bool = False) -> PreparedRule:
        """Every handler of `rule` prepared; on the first problem, `invalid` says which."""
        if rule.invalid:
            return PreparedRule(rule, invalid=rule.invalid)
        where = rule.where
        try:
            authenticators = tuple(
                self._step("authenticators", h, where, trusted=trusted) for h in rule.authenticators
            )
            authorizer = (
                self._step("authorizers", rule.authorizer, where, trusted=trusted)
                if rule.authorizer is not None
                else None
            )
            mutators = tuple(
                self._step("mutators", h, where, trusted=trusted) for h in rule.mutators
            )
            errors = tuple(self._step("errors", h, where, trusted=trusted) for h in rule.errors)
        except ConfigError as exc:
            return PreparedRule(rule, invalid=str(exc))
        if not authenticators or authorizer is None or not mutators:
            return PreparedRule(
                rule, invalid=f"{where}: needs authenticators, an authorizer and mutators"
            )
        return PreparedRule(rule, authenticators, authorizer, mutators, errors)

    def default_step(self, kind: str, name: str) -> Step | None:
        """`name` with its global config, whether enabled or not (the last-resort `json`)."""
        try:
            return self._step(kind, Handler(name), "default", trusted=True)
        except ConfigError as exc:
            log.error("%s", exc)
            return None

    def validate(self, rule: AccessRule) -> str:
        """The loader's hook: why this rule's handlers cannot run, or ""."""
        return self.prepare_rule(rule).invalid


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Oathkeeper's merge of a rule's config over the global one: key by key, one level."""
    merged = dict(base)
    merged.update(override)
    return merged


def default_registry(
    services: Services,
    *,
    extra: Mapping[str, Mapping[str, type[Any]]] | None = None,
) -> Registry:
    """Every handler this install has. Mutators and error handlers live in their own
    packages, imported here (not at module load) so the registry works with either absent."""
    from ory_wsgi.pipeline.authenticators import AUTHENTICATORS
    from ory_wsgi.pipeline.authorizers import AUTHORIZERS

    kinds: dict[str, dict[str, type[Any]]] = {
        "authenticators": dict(AUTHENTICATORS),
        "authorizers": dict(AUTHORIZERS),
        "mutators": dict(_optional("ory_wsgi.pipeline.mutators", "MUTATORS")),
        "errors": dict(_optional("ory_wsgi.pipeline.error_handlers", "ERROR_HANDLERS")),
    }
    for kind, handlers in (extra or {}).items():
        kinds[kind].update(handlers)
    return Registry(
        services,
        authenticators=kinds["authenticators"],
        authorizers=kinds["authorizers"],
        mutators=kinds["mutators"],
        error_handlers=kinds["errors"],
    )


def _optional(module: str, name: str) -> Mapping[str, type[Any]]:
    import importlib

    try:
        loaded = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise
        return {}
    handlers: Mapping[str, type[Any]] = getattr(loaded, name)
    return handlers


def names(steps: Sequence[Step]) -> tuple[str, ...]:
    return tuple(step.name for step in steps)
