"""Access rules as data: what a rule file, or `[[rule]]` in ory.toml, says.

The fields are Oathkeeper's access-rule fields (`id`, `version`,
`description`, `match`, `authenticators`, `authorizer`, `mutators`, `errors`,
`upstream`) plus ours: `priority` and the upstream's TLS settings. Everything
is frozen: a rule set is built once by `ory_wsgi.rules.loader`, compiled once
by `ory_wsgi.rules.matcher` and then shared, read-only, by every request
thread. Handler `config` tables are kept as the plain data the file held;
the pipeline validates and merges them over the global handler config.

A rule whose `invalid` is set was read but fails validation (e.g. no
authenticators): it still matches, so that a request for it fails closed
instead of falling through to a broader rule, and the reason is reported
at load (SPEC §16, as Oathkeeper keeps "invalid rules").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Strategy = Literal["regexp", "glob"]
STRATEGIES: tuple[Strategy, ...] = ("regexp", "glob")


@dataclass(frozen=True, slots=True)
class Handler:
    """One pipeline step: a handler name and its per-rule config (JSON-like data)."""

    handler: str
    config: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Match:
    """Which requests a rule is for.

    `methods` are upper-case; a rule with none matches no request (as in
    Oathkeeper). `url` is `scheme://host/path` with `<...>` patterns in the
    rule set's matching strategy, or in this rule's own `strategy` when set
    (an ory_wsgi extension: Oathkeeper's strategy is global).
    """

    methods: tuple[str, ...]
    url: str
    strategy: Strategy | None = None


@dataclass(frozen=True, slots=True)
class Upstream:
    """Where a matching request is forwarded; an empty `url` means `[proxy] upstream`."""

    url: str = ""
    preserve_host: bool = False
    strip_path: str = ""
    ca_file: str = ""
    client_cert: str = ""
    client_key: str = ""
    server_name: str = ""


@dataclass(frozen=True, slots=True)
class AccessRule:
    """One access rule. `source` names where it was read (file, or ory.toml `[[rule]] #n`)."""

    id: str
    source: str
    match: Match | None = None
    version: str = ""
    description: str = ""
    authenticators: tuple[Handler, ...] = ()
    authorizer: Handler | None = None
    mutators: tuple[Handler, ...] = ()
    errors: tuple[Handler, ...] = ()
    upstream: Upstream = field(default_factory=Upstream)
    priority: int = 0
    invalid: str = ""  # "<source>: rule <id>: why" when it fails closed; "" when valid

    @property
    def where(self) -> str:
        """`<source>: rule <id>`, the start of every message about this rule."""
        return f"{self.source}: rule {self.id!r}"


@dataclass(frozen=True, slots=True)
class RuleSet:
    """Every rule in force, in load order, with the settings that say how they match.

    Load order is: `[[rule]]` tables of ory.toml, then each repository in the
    order `[access_rules] repositories` lists them, each file's rules in file
    order. It breaks exact ties between equally specific matches (see
    `ory_wsgi.rules.matcher`).
    """

    rules: tuple[AccessRule, ...] = ()
    strategy: Strategy = "regexp"  # a rule's own `match.strategy` overrides it
    default_rule: str = ""  # id of the rule used when no rule matches; "" for none
    sources: tuple[str, ...] = ()  # the files and repositories it was read from

    def get(self, rule_id: str) -> AccessRule | None:
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        return None

    @property
    def invalid(self) -> tuple[AccessRule, ...]:
        return tuple(rule for rule in self.rules if rule.invalid)
