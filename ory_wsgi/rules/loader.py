"""Reading access rules: Oathkeeper rule documents, `[[rule]]` tables and repositories.

A rule document is JSON or YAML (JSON when it parses as JSON, as Oathkeeper
decides) holding a list of rules in Oathkeeper's access-rule format. Unknown
fields are refused, types are checked; every problem is one `RuleError` line
naming the file, the rule (id, or `#n` when it has none) and what is wrong.

Two kinds of problem:
- the document or a rule cannot be read (bad syntax, unknown field, wrong
  type, no id, a `match.url` that does not compile, a duplicate id): the
  whole set is refused with a RuleError;
- a rule reads but fails validation (no authenticators, no authorizer, no
  mutators, an upstream that is not an http(s) URL, or what the pipeline's
  `validate` hook says about its handlers): it is kept with `invalid` set, so
  that it still matches and fails closed, and `RuleSet.invalid` reports it.

Repositories (`[access_rules] repositories`): `file:///abs/path`, a bare path
(made absolute against the config file's directory by the settings),
`inline://<base64 of a document>` and `http(s)://` (fetched once, at load,
with a timeout; not polled, as in Oathkeeper).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import difflib
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote, urlsplit

from ory_wsgi.errors import ConfigError
from ory_wsgi.rules.matcher import PatternError, compile_url
from ory_wsgi.rules.model import (
    STRATEGIES,
    AccessRule,
    Handler,
    Match,
    RuleSet,
    Strategy,
    Upstream,
)

if TYPE_CHECKING:
    from ory_wsgi.settings import Settings

RULE_KEYS = (
    "id",
    "version",
    "description",
    "match",
    "authenticators",
    "authorizer",
    "mutators",
    "errors",
    "upstream",
    "priority",
)
MATCH_KEYS = ("methods", "url", "strategy")  # `strategy`: ours, per rule
GRPC_MATCH_KEYS = ("authority", "full_method", "allow_http_get")
HANDLER_KEYS = ("handler", "config")
UPSTREAM_KEYS = (
    "url",
    "preserve_host",
    "strip_path",
    "ca_file",
    "client_cert",
    "client_key",
    "server_name",
)
UPSTREAM_FILES = ("ca_file", "client_cert", "client_key")
METHOD_RE = re.compile(r"^[A-Za-z]+$")
REMOTE_TIMEOUT = 15.0  # seconds, Oathkeeper's overall timeout for remote repositories
MAX_DOCUMENT = 16 * 1024 * 1024  # bytes; a rule document is never near this

# The pipeline's check of a rule's handlers: returns why the rule is invalid, or "".
Validate = Callable[[AccessRule], str]


class RuleError(ConfigError):
    """A rule document or repository cannot be used; one line naming file and rule."""


@dataclass(frozen=True, slots=True)
class Repository:
    """One entry of `[access_rules] repositories`, understood."""

    location: str  # as configured (a bare path already made absolute)
    kind: Literal["file", "inline", "http"]
    path: str = ""  # for files: the absolute path

    @property
    def label(self) -> str:
        """How messages name it: the path, the URL, or a short inline:// prefix."""
        if self.kind == "file":
            return self.path
        if self.kind == "inline":
            return self.location[:24] + ("..." if len(self.location) > 24 else "")
        return self.location


def parse_repository(location: str, base_dir: str) -> Repository:
    """Understand one repository; relative file paths are taken from `base_dir`."""
    scheme = urlsplit(location).scheme.lower() if "://" in location else ""
    if scheme == "file":
        path = unquote(location[len("file://") :])
        if not path:
            raise RuleError(f"{location}: a file:// repository needs a path")
        return Repository(location, "file", os.path.normpath(os.path.join(base_dir, path)))
    if scheme == "inline":
        return Repository(location, "inline")
    if scheme in ("http", "https"):
        if not urlsplit(location).hostname:
            raise RuleError(f"{location}: not an http(s) URL")
        return Repository(location, "http")
    if scheme:
        raise RuleError(
            f"{location}: repositories can be file://, inline://, http(s):// or a path,"
            f" not {scheme}://"
        )
    if not location.strip():
        raise RuleError("an empty string is not a repository")
    return Repository(location, "file", os.path.normpath(os.path.join(base_dir, location)))


def read_repository(repository: Repository, timeout: float = REMOTE_TIMEOUT) -> bytes:
    """The document a repository holds, as bytes; RuleError when it cannot be had."""
    label = repository.label
    if repository.kind == "file":
        try:
            with open(repository.path, "rb") as handle:
                return handle.read(MAX_DOCUMENT + 1)
        except FileNotFoundError:
            raise RuleError(f"{label}: no such file") from None
        except OSError as exc:
            raise RuleError(f"{label}: cannot read: {exc.strerror}") from None
    if repository.kind == "inline":
        encoded = repository.location[len("inline://") :]
        try:
            return base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise RuleError(f"{label}: inline:// must be followed by base64") from None
    import urllib.error  # only http(s) repositories need it; settings import this module
    import urllib.request

    try:
        # The URL is the operator's own setting (http or https only), not request input.
        with urllib.request.urlopen(repository.location, timeout=timeout) as answer:  # noqa: S310
            if answer.status != 200:
                raise RuleError(f"{label}: expected 200, got {answer.status}")
            data: bytes = answer.read(MAX_DOCUMENT + 1)
            return data
    except urllib.error.HTTPError as exc:
        raise RuleError(f"{label}: expected 200, got {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RuleError(f"{label}: cannot fetch: {reason}") from None


def decode_document(data: bytes, source: str) -> Any:
    """JSON when the bytes are valid JSON, else YAML (as Oathkeeper decides)."""
    if len(data) > MAX_DOCUMENT:
        raise RuleError(f"{source}: larger than {MAX_DOCUMENT // (1024 * 1024)} MiB")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise RuleError(f"{source}: not UTF-8 text") from None
    try:
        return json.loads(text)
    except ValueError:
        pass
    import yaml  # only rule files in YAML need it

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RuleError(f"{source}: neither JSON nor valid YAML: {_one_line(exc)}") from None


def parse_document(raw: Any, source: str, base_dir: str) -> tuple[AccessRule, ...]:
    """The rules of one decoded document (a list of rules; an empty document has none)."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise RuleError(f"{source}: expected a list of rules, got {_kind(raw)}")
    return tuple(parse_rule(entry, source, index, base_dir) for index, entry in enumerate(raw))


def parse_rule(raw: Any, source: str, index: int, base_dir: str) -> AccessRule:
    """One rule from its decoded form; RuleError when it cannot be read at all."""
    where = f"{source}: rule #{index + 1}"
    if not isinstance(raw, Mapping):
        raise RuleError(f"{where}: expected an object, got {_kind(raw)}")
    rule_id = raw.get("id")
    if isinstance(rule_id, str) and rule_id.strip():
        where = f"{source}: rule {rule_id!r}"
    _refuse_unknown(raw, RULE_KEYS, where, "")
    if not isinstance(rule_id, str) or not rule_id.strip():
        raise RuleError(f"{where}: id: must be a non-empty string, got {rule_id!r}")
    priority = raw.get("priority", 0)
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise RuleError(f"{where}: priority: expected a whole number, got {priority!r}")
    authorizer = raw.get("authorizer")
    return AccessRule(
        id=rule_id,
        source=source,
        match=_match(raw.get("match"), where),
        version=_string(raw, "version", where),
        description=_string(raw, "description", where),
        authenticators=_handlers(raw.get("authenticators"), "authenticators", where),
        authorizer=None if authorizer is None else _handler(authorizer, "authorizer", where),
        mutators=_handlers(raw.get("mutators"), "mutators", where),
        errors=_handlers(raw.get("errors"), "errors", where),
        upstream=_upstream(raw.get("upstream"), where, base_dir),
        priority=priority,
    )


def build_rule_set(
    groups: Iterable[tuple[AccessRule, ...]],
    strategy: Strategy = "regexp",
    default_rule: str = "",
    sources: Sequence[str] = (),
    validate: Validate | None = None,
) -> RuleSet:
    """Join the rules of every source into one checked RuleSet (in load order)."""
    if strategy not in STRATEGIES:
        raise RuleError(f"matching_strategy must be regexp or glob, got {strategy!r}")
    seen: dict[str, AccessRule] = {}
    for rule in (rule for group in groups for rule in group):
        if rule.id in seen:
            raise RuleError(f"{rule.where}: duplicate id (also in {seen[rule.id].source})")
        seen[rule.id] = rule
    if default_rule and default_rule not in seen:
        choices = difflib.get_close_matches(default_rule, list(seen), n=1)
        hint = f" (did you mean {choices[0]}?)" if choices else ""
        raise RuleError(f"[access_rules] default_rule: no rule has the id {default_rule!r}{hint}")
    rules: list[AccessRule] = []
    for rule in seen.values():
        if rule.match is None and rule.id != default_rule:
            raise RuleError(
                f"{rule.where}: match: must be set (only [access_rules] default_rule may omit it)"
            )
        if rule.match is not None:
            try:
                compile_url(rule.match.url, rule.match.strategy or strategy)
            except PatternError as exc:
                raise RuleError(f"{rule.where}: match.url: {exc}") from None
        problem = _problem(rule) or (validate(rule) if validate else "")
        rules.append(replace(rule, invalid=f"{rule.where}: {problem}") if problem else rule)
    return RuleSet(tuple(rules), strategy, default_rule, tuple(sources))


def load_repository(
    repository: Repository, timeout: float = REMOTE_TIMEOUT
) -> tuple[AccessRule, ...]:
    """Read, decode and parse one repository."""
    data = read_repository(repository, timeout)
    base_dir = os.path.dirname(repository.path) if repository.kind == "file" else os.getcwd()
    return parse_document(decode_document(data, repository.label), repository.label, base_dir)


def load_rule_set(
    settings: Settings, validate: Validate | None = None, timeout: float = REMOTE_TIMEOUT
) -> RuleSet:
    """Every rule the settings name: `[[rule]]` tables, then each repository, read now."""
    config = settings.access_rules
    repositories = [parse_repository(location, os.getcwd()) for location in config.repositories]
    groups = [settings.rule, *(load_repository(repo, timeout) for repo in repositories)]
    return build_rule_set(
        groups,
        config.matching_strategy,  # type: ignore[arg-type]  # checked by the settings
        config.default_rule,
        [repo.label for repo in repositories],
        validate,
    )


def _problem(rule: AccessRule) -> str:
    """Oathkeeper's validator, the part that needs no handler registry."""
    if not rule.authenticators:
        return "authenticators: must not be empty"
    if rule.authorizer is None or not rule.authorizer.handler:
        return "authorizer.handler: must be set"
    if not rule.mutators:
        return "mutators: must not be empty"
    if rule.upstream.url:
        parts = urlsplit(rule.upstream.url)
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            return f"upstream.url: not a URL: {rule.upstream.url!r}"
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return f"upstream.url: not an http(s) URL: {rule.upstream.url!r}"
    return ""


def _refuse_unknown(raw: Mapping[Any, Any], known: Sequence[str], where: str, path: str) -> None:
    for key in raw:
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=1)
            hint = f" (did you mean {path}{close[0]}?)" if close else ""
            raise RuleError(f"{where}: unknown field {path}{key}{hint}")


def _string(raw: Mapping[str, Any], key: str, where: str) -> str:
    value = raw.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RuleError(f"{where}: {key}: expected a string, got {value!r}")
    return value


def _match(raw: Any, where: str) -> Match | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise RuleError(f"{where}: match: expected an object, got {_kind(raw)}")
    if any(key in raw for key in GRPC_MATCH_KEYS):
        raise RuleError(f"{where}: match: gRPC rules (authority, full_method) are not supported")
    _refuse_unknown(raw, MATCH_KEYS, where, "match.")
    url = raw.get("url")
    if not isinstance(url, str) or not url:
        raise RuleError(f"{where}: match.url: must be a non-empty string, got {url!r}")
    methods = raw.get("methods") or []
    if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
        raise RuleError(f"{where}: match.methods: expected a list of strings, got {methods!r}")
    for method in methods:
        if not METHOD_RE.match(method):
            raise RuleError(f"{where}: match.methods: not an HTTP method: {method!r}")
    strategy = raw.get("strategy")
    if strategy is not None and strategy not in STRATEGIES:
        raise RuleError(f"{where}: match.strategy: must be regexp or glob, got {strategy!r}")
    # Oathkeeper compares methods ignoring case.
    return Match(tuple(dict.fromkeys(m.upper() for m in methods)), url, strategy)


def _handlers(raw: Any, key: str, where: str) -> tuple[Handler, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise RuleError(f"{where}: {key}: expected a list, got {_kind(raw)}")
    return tuple(_handler(item, f"{key}[{index}]", where) for index, item in enumerate(raw))


def _handler(raw: Any, key: str, where: str) -> Handler:
    if not isinstance(raw, Mapping):
        raise RuleError(f"{where}: {key}: expected an object with handler, got {_kind(raw)}")
    _refuse_unknown(raw, HANDLER_KEYS, where, f"{key}.")
    name = raw.get("handler")
    if not isinstance(name, str):
        raise RuleError(f"{where}: {key}.handler: expected a string, got {name!r}")
    config = raw.get("config")
    if config is None:
        config = {}
    if not isinstance(config, Mapping):
        raise RuleError(f"{where}: {key}.config: expected an object, got {_kind(config)}")
    return Handler(name, _json_data(config, where, f"{key}.config"))


def _json_data(value: Any, where: str, path: str) -> Any:
    """Config as the JSON Oathkeeper would see: YAML and TOML dates become ISO strings."""
    if isinstance(value, Mapping):
        return {str(k): _json_data(v, where, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_json_data(item, where, f"{path}[{i}]") for i, item in enumerate(value)]
    if value is None or isinstance(value, str | int | float):
        return value
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    raise RuleError(f"{where}: {path}: not JSON data: {type(value).__name__}")


def _upstream(raw: Any, where: str, base_dir: str) -> Upstream:
    if raw is None:
        return Upstream()
    if not isinstance(raw, Mapping):
        raise RuleError(f"{where}: upstream: expected an object, got {_kind(raw)}")
    _refuse_unknown(raw, UPSTREAM_KEYS, where, "upstream.")
    values: dict[str, Any] = {}
    for key in UPSTREAM_KEYS:
        value = raw.get(key)
        if value is None:
            continue
        if key == "preserve_host":
            if not isinstance(value, bool):
                raise RuleError(f"{where}: upstream.preserve_host: expected true or false")
        elif not isinstance(value, str):
            raise RuleError(f"{where}: upstream.{key}: expected a string, got {value!r}")
        elif key in UPSTREAM_FILES and value:
            value = os.path.normpath(os.path.join(base_dir, value))
        values[key] = value
    return Upstream(**values)


def _kind(value: Any) -> str:
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    return "nothing" if value is None else repr(value)


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())
