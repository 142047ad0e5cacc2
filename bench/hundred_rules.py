"""The configurations of bench/run.py's rule-set comparison: 100 access rules vs one [[protect]].

    config = hundred_rules(workdir, "127.0.0.1:8080", upstream_url)   # ory.toml + rules.json
    config = one_protect(workdir)                                     # ory.toml, [[protect]] only

Both decide the benchmarked `GET /hello` alike: an open path where a Kratos
session, when the request carries one, is checked and turned into the JWT
(the `[[public]]` handlers: `cookie_session` and `bearer_token` with
`optional`, then `noop`; `allow`; `id_token` with `only_with_session`). What
differs is what finds that rule: `[[protect]]`'s path rules, or the access
rule matcher over 100 rules of an API (`/api/v1/<resource>/<id>` and kin,
regexp and glob mixed through the per-rule `match.strategy`, several methods),
where the rule for `/hello` comes near the end of the file and shares its
literal prefix with a few root-level rules that do not match it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESOURCES = (
    "users",
    "orders",
    "invoices",
    "products",
    "teams",
    "projects",
    "files",
    "reports",
    "tickets",
    "events",
)
RULE_COUNT = 100
# The upstreams the rules name in turn. Only the bench upstream for now: until
# per-rule upstreams are served, a rule naming another is answered 502 (the
# lead adds more upstreams here once they are).
UPSTREAMS = ("{upstream}",)

HANDLERS = """
[authenticators.cookie_session]
enabled = true
[authenticators.bearer_token]
enabled = true
[authenticators.noop]
enabled = true
[authorizers.allow]
enabled = true
[authorizers.deny]
enabled = true
[mutators.id_token]
enabled = true
[mutators.noop]
enabled = true
[errors.handlers.json]
enabled = true
"""


def _rule(
    rule_id: str, url: str, methods: list[str], strategy: str, upstream: str, *, deny: bool = False
) -> dict[str, Any]:
    optional = {"optional": True}
    return {
        "id": rule_id,
        "match": {"url": url, "methods": methods, "strategy": strategy},
        "authenticators": [
            {"handler": "cookie_session", "config": optional},
            {"handler": "bearer_token", "config": optional},
            {"handler": "noop"},
        ],
        "authorizer": {"handler": "deny" if deny else "allow"},
        "mutators": [{"handler": "id_token", "config": {"only_with_session": True}}],
        "upstream": {"url": upstream},
    }


def rules(origin: str, upstream_url: str) -> list[dict[str, Any]]:
    """`RULE_COUNT` rules for `http://<origin>`; the one for `/hello` is third from last."""
    base = f"http://{origin}"
    upstreams = [u.replace("{upstream}", upstream_url) for u in UPSTREAMS]
    found: list[dict[str, Any]] = []

    def add(url: str, methods: list[str], strategy: str, **kwargs: Any) -> None:
        upstream = upstreams[len(found) % len(upstreams)]
        found.append(_rule(f"r{len(found):03d}", url, methods, strategy, upstream, **kwargs))

    # Root-level rules whose prefix `/hello` shares: candidates that do not match it.
    add(f"{base}/<**>.{{png,css,js,ico}}", ["GET", "HEAD"], "glob")
    add(f"{base}/<(?:en|de|fr)>/<.*>", ["GET", "HEAD"], "regexp")
    add(f"{base}/robots.txt", ["GET"], "regexp")
    add(f"{base}/admin<(?:/.*)?>", ["GET", "POST", "PUT", "DELETE"], "regexp", deny=True)
    version = 0
    while len(found) < RULE_COUNT - 3:
        resource = RESOURCES[len(found) % len(RESOURCES)]
        version = 1 + (len(found) // (4 * len(RESOURCES))) % 3
        api = f"{base}/api/v{version}/{resource}"
        kind = (len(found) // len(RESOURCES)) % 4
        if kind == 0:
            add(f"{api}/<[0-9]+>", ["GET", "HEAD"], "regexp")
        elif kind == 1:
            add(f"{api}/<*>/comments", ["GET", "POST"], "glob")
        elif kind == 2:
            add(f"{api}/<[0-9]+>/<[a-z]+(?:-[a-z]+)*>", ["PUT", "PATCH", "DELETE"], "regexp")
        else:
            add(f"{api}/<**>", ["POST"], "glob")
    add(f"{base}/<hello|welcome>", ["GET", "HEAD"], "regexp")  # the benchmarked path
    add(f"{base}/health/<{{live,ready}}>", ["GET"], "glob")
    add(f"{base}/static/<**>", ["GET", "HEAD"], "glob")
    return found


def hundred_rules(workdir: Path, origin: str, upstream_url: str) -> Path:
    """ory.toml naming rules.json: 100 access rules (regexp by default, some glob)."""
    (workdir / "rules.json").write_text(json.dumps(rules(origin, upstream_url), indent=1))
    config = workdir / "rules-100.toml"
    config.write_text(
        '[access_rules]\nrepositories = ["rules.json"]\nmatching_strategy = "regexp"\n' + HANDLERS
    )
    return config


def one_protect(workdir: Path) -> Path:
    """ory.toml with one [[protect]] entry, which `/hello` is outside of."""
    config = workdir / "protect-1.toml"
    config.write_text('[[protect]]\nprefix = "/members"\n')
    return config
