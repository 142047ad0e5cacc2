"""Settings: the TOML file, merged with the environment and overrides.

Precedence, lowest first: defaults < TOML file < environment < overrides (the
command line, or keyword arguments of `make_app`). Every problem is reported
as one `ConfigError` line naming the source, the key and what is wrong.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from ory_wsgi.errors import ConfigError
from ory_wsgi.rules.loader import RuleError, parse_document, parse_repository
from ory_wsgi.rules.model import STRATEGIES, AccessRule
from ory_wsgi.upstream.transport import TLS_KEYS, TLSOptions, parse_upstream, ssl_context

DURATION = {"duration": True}


@dataclass(frozen=True)
class ProxySettings:
    upstream: str = ""
    public_url: str = ""
    rewrite_host: bool = False
    default_redirect_url: str = ""
    trusted_proxies: tuple[str, ...] = ()
    connect_timeout: float = field(default=5.0, metadata=DURATION)
    read_timeout: float = field(default=120.0, metadata=DURATION)
    max_body_size: int = 0
    body_timeout: float = field(default=20.0, metadata=DURATION)
    body_min_rate: int = 500
    state_dir: str = ".ory-wsgi"
    protected_cache_control: str = "private, no-store"
    upstream_ca_file: str = ""
    upstream_client_cert: str = ""
    upstream_client_key: str = ""
    upstream_server_name: str = ""

    @property
    def upstream_tls(self) -> TLSOptions:
        """The `upstream_*` TLS keys, as the transport takes them."""
        return TLSOptions(
            ca_file=self.upstream_ca_file,
            client_cert=self.upstream_client_cert,
            client_key=self.upstream_client_key,
            server_name=self.upstream_server_name,
        )


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 4000


@dataclass(frozen=True)
class OrySettings:
    sdk_url: str = ""
    project: str = ""
    api_key: str = ""
    session_cookie: str = ""
    cookie_domain: str = ""
    timeout: float = field(default=3.0, metadata=DURATION)
    rate_limit_header: str = ""
    max_calls_per_second: int = 0
    max_call_wait: float = field(default=0.25, metadata=DURATION)


@dataclass(frozen=True)
class SessionCacheSettings:
    ttl: float = field(default=10.0, metadata=DURATION)
    negative_ttl: float = field(default=2.0, metadata=DURATION)
    max_entries: int = 10000
    backend: str = "memory"
    redis_url: str = ""
    redis_timeout: float = field(default=0.25, metadata=DURATION)
    memory_ttl: float = field(default=1.0, metadata=DURATION)
    redis_cluster: bool = False


@dataclass(frozen=True)
class JwtSettings:
    enabled: bool = True
    ttl: float = field(default=60.0, metadata=DURATION)
    issuer: str = ""
    audience: str = ""
    keys_file: str = ""
    keys_backend: str = "file"
    keep_client_authorization: bool = False
    claims: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CorsSettings:
    allowed_origins: tuple[str, ...] = ()
    additional_headers: tuple[str, ...] = ()
    max_age: float = field(default=600.0, metadata=DURATION)


@dataclass(frozen=True)
class DecisionsSettings:
    enabled: bool = False


@dataclass(frozen=True)
class MetricsSettings:
    enabled: bool = False
    path: str = "/.ory/proxy/metrics"


@dataclass(frozen=True)
class LogSettings:
    format: str = "json"
    level: str = "info"


@dataclass(frozen=True)
class AccessRulesSettings:
    """`[access_rules]`: where rule files are and how `match.url` patterns are read (§16)."""

    repositories: tuple[str, ...] = ()  # absolute paths, file://, inline://, http(s)://
    matching_strategy: str = "regexp"
    default_rule: str = ""
    no_match_status: int = 404  # or 403; the decisions endpoint always answers 403


@dataclass(frozen=True)
class Rule:
    """One `[[protect]]` or `[[public]]` entry: exactly one of the three matchers."""

    prefix: str = ""
    glob: str = ""
    regex: str = ""
    methods: tuple[str, ...] = ()
    aal: str = ""


@dataclass(frozen=True)
class HandlerSettings:
    """`[authenticators.<name>]` (and authorizers, mutators, errors.handlers): global config.

    A rule may use a handler only when it is `enabled` (as in Oathkeeper); a
    rule's own `config` is merged key by key over this `config`.
    """

    enabled: bool = False
    config: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ErrorsSettings:
    """`[errors]`: the error handlers used when a rule names none, and their global config."""

    fallback: tuple[str, ...] = ("json",)
    handlers: Mapping[str, HandlerSettings] = field(default_factory=dict)


@dataclass(frozen=True)
class Settings:
    proxy: ProxySettings = field(default_factory=ProxySettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    ory: OrySettings = field(default_factory=OrySettings)
    session_cache: SessionCacheSettings = field(default_factory=SessionCacheSettings)
    jwt: JwtSettings = field(default_factory=JwtSettings)
    cors: CorsSettings = field(default_factory=CorsSettings)
    decisions: DecisionsSettings = field(default_factory=DecisionsSettings)
    log: LogSettings = field(default_factory=LogSettings)
    access_rules: AccessRulesSettings = field(default_factory=AccessRulesSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    protect: tuple[Rule, ...] = ()
    public: tuple[Rule, ...] = ()
    rule: tuple[AccessRule, ...] = ()  # `[[rule]]` tables: access rules in ory.toml
    authenticators: Mapping[str, HandlerSettings] = field(default_factory=dict)
    authorizers: Mapping[str, HandlerSettings] = field(default_factory=dict)
    mutators: Mapping[str, HandlerSettings] = field(default_factory=dict)
    errors: ErrorsSettings = field(default_factory=ErrorsSettings)

    @property
    def ory_url(self) -> str:
        """Kratos' public API: `sdk_url`, or the Ory Network URL of `project`."""
        if self.ory.sdk_url:
            return self.ory.sdk_url.rstrip("/")
        if self.ory.project:
            return f"https://{self.ory.project}.projects.oryapis.com"
        return ""


SECTIONS: dict[str, type[Any]] = {
    f.name: f.default_factory  # type: ignore[misc]
    for f in dataclasses.fields(Settings)
    if f.name
    not in ("protect", "public", "rule", "authenticators", "authorizers", "mutators", "errors")
}
RULE_LISTS = ("protect", "public")
# Pipeline handler tables (SPEC §16): tables of tables, kept whole per handler name.
HANDLER_KINDS = ("authenticators", "authorizers", "mutators")
HANDLER_SECTIONS = (*HANDLER_KINDS, "errors")
HANDLER_KEYS = ("enabled", "config")
ACCESS_RULES = "rule"  # `[[rule]]`: parsed by ory_wsgi.rules.loader
RULE_KEYS = tuple(f.name for f in dataclasses.fields(Rule))
# ORY_WSGI_<SECTION>_<KEY> -> (section, key)
ENV_KEYS = {
    f"ORY_WSGI_{section}_{f.name}".upper(): (section, f.name)
    for section, cls in SECTIONS.items()
    for f in dataclasses.fields(cls)
}

# Env names Ory's own tools use, mapped to our keys.
ORY_ENV = {
    "ORY_SDK_URL": ("ory", "sdk_url"),
    "ORY_PROJECT": ("ory", "project"),
    "ORY_PROJECT_API_KEY": ("ory", "api_key"),
    "ORY_RATE_LIMIT_HEADER": ("ory", "rate_limit_header"),
    "PORT": ("server", "port"),
}
# ORY_WSGI_* names that are not settings (read by the CLI and the bin/ scripts).
ENV_NOT_SETTINGS = frozenset({"ORY_WSGI_CONFIG", "ORY_WSGI_VENV"})
SECRET_KEYS = {("ory", "api_key"), ("session_cache", "redis_url")}
CACHE_BACKENDS = ("memory", "redis")
KEYS_BACKENDS = ("file", "redis")
REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel")
LOG_FORMATS = ("json", "text")
LOG_LEVELS = ("debug", "info", "warning", "error")
AALS = ("aal1", "aal2", "aal3")
METHOD_RE = re.compile(r"^[A-Z]+$")
DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
MAX_DURATION = 10 * 365 * 24 * 3600.0


class Value(NamedTuple):
    source: str  # the file, env var or override that set it
    raw: Any
    textual: bool  # env vars and CLI strings: "true", "1,2", "30" are parsed
    directory: str = ""  # relative paths in it are taken from here ("" = the working dir)


Layer = dict[str, dict[str, Value]]


def load_settings(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the settings from a TOML file, the environment and overrides."""
    env = os.environ if env is None else env
    layers: list[tuple[str, Layer]] = []
    if path is not None:
        layers.append((str(path), _read_toml(str(path))))
    layers.append(("environment", _env_layer(env)))
    if overrides:
        layers.append(("overrides", _override_layer(overrides)))

    merged: Layer = {}
    rules: dict[str, Any] = {}
    access_rules: tuple[AccessRule, ...] | None = None
    handlers: dict[str, dict[str, tuple[str, Any]]] = {}
    for source, layer in layers:
        for name in RULE_LISTS:
            if name in layer:
                rules[name] = (source, layer.pop(name))
        for name in HANDLER_SECTIONS:
            if name in layer:
                table: Any = layer.pop(name)
                if not isinstance(table, Mapping):
                    raise ConfigError(f"{source}: [{name}] must be a table, got {table!r}")
                # A higher layer replaces a handler's whole table, never half of it.
                for key, value in table.items():
                    handlers.setdefault(name, {})[key] = (source, value)
        if ACCESS_RULES in layer:
            from_file = path is not None and source == str(path)
            directory = os.path.dirname(os.path.abspath(source)) if from_file else ""
            access_rules = _build_access_rules(source, layer.pop(ACCESS_RULES), directory)
        ory = layer.get("ory", {})
        if _set(ory, "sdk_url") and _set(ory, "project"):
            names = sorted({ory["sdk_url"].source, ory["project"].source} - {source})
            hint = f" ({' and '.join(names)})" if names else ""
            raise ConfigError(
                f"{source}: [ory] sdk_url and project are both set{hint}: set only one of them"
            )
        for section, values in layer.items():
            target = merged.setdefault(section, {})
            target.update(values)
            # A higher layer naming one way to reach Ory replaces the other.
            if section == "ory" and (_set(values, "sdk_url") or _set(values, "project")):
                target.pop("project" if _set(values, "sdk_url") else "sdk_url", None)
    settings = _build(merged, rules)
    if access_rules is not None:
        settings = dataclasses.replace(settings, rule=access_rules)
    if handlers:
        settings = dataclasses.replace(settings, **_build_handler_sections(handlers))
    return settings


def _build_handler_sections(raw: Mapping[str, Mapping[str, tuple[str, Any]]]) -> dict[str, Any]:
    """`[authenticators.<name>]`, `[authorizers.<name>]`, `[mutators.<name>]`, `[errors]`."""
    built: dict[str, Any] = {}
    for kind in HANDLER_KINDS:
        if kind in raw:
            built[kind] = {
                name: _handler_settings(f"{source}: [{kind}.{name}]", value)
                for name, (source, value) in raw[kind].items()
            }
    if "errors" in raw:
        fallback: tuple[str, ...] = ("json",)
        tables: dict[str, HandlerSettings] = {}
        for key, (source, value) in raw["errors"].items():
            if key == "fallback":
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise ConfigError(f"{source}: [errors] fallback: expected a list of names")
                fallback = tuple(value)
            elif key == "handlers":
                if not isinstance(value, Mapping):
                    raise ConfigError(f"{source}: [errors.handlers] must be a table")
                for name, table in value.items():
                    where = f"{source}: [errors.handlers.{name}]"
                    tables[name] = _handler_settings(where, table)
            else:
                hint = _suggest(key, ["fallback", "handlers"])
                raise ConfigError(f"{source}: unknown key [errors] {key}{hint}")
        built["errors"] = ErrorsSettings(fallback=fallback, handlers=tables)
    return built


def _handler_settings(where: str, value: Any) -> HandlerSettings:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: must be a table with enabled and config, got {value!r}")
    for key in value:
        if key not in HANDLER_KEYS:
            raise ConfigError(f"{where}: unknown key {key}{_suggest(key, list(HANDLER_KEYS))}")
    enabled = value.get("enabled", False)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{where}: enabled: expected true or false, got {enabled!r}")
    config = value.get("config", {})
    if not isinstance(config, Mapping):
        raise ConfigError(f"{where}: config must be a table, got {config!r}")
    return HandlerSettings(enabled=enabled, config=dict(config))


def _set(values: Mapping[str, Value], key: str) -> bool:
    return key in values and bool(values[key].raw)


def _read_toml(path: str) -> Layer:
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    layer: Layer = {}
    directory = os.path.dirname(os.path.abspath(path))
    for section, values in data.items():
        if section in (*RULE_LISTS, ACCESS_RULES):
            if not isinstance(values, list):
                raise ConfigError(f"{path}: [[{section}]] must be an array of tables")
            layer[section] = values  # type: ignore[assignment]
            continue
        if section in HANDLER_SECTIONS:
            layer[section] = values  # checked by _build_handler_sections
            continue
        if section not in SECTIONS:
            owners = _owners().get(section, [])
            if owners and not isinstance(values, dict):
                hint = f" (did you mean [{owners[0]}] {section}?)"
                raise ConfigError(f"{path}: {section} must be set inside a section{hint}")
            raise ConfigError(f"{path}: unknown section [{section}]{_suggest(section, _roots())}")
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: [{section}] must be a table, got {values!r}")
        layer[section] = {
            key: Value(path, value, False, directory) for key, value in values.items()
        }
    return layer


def _env_layer(env: Mapping[str, str]) -> Layer:
    layer: Layer = {}
    for name, (section, key) in ORY_ENV.items():
        if env.get(name):
            layer.setdefault(section, {})[key] = Value(name, env[name], True)
    for name, value in env.items():
        if not name.startswith("ORY_WSGI_") or name in ENV_NOT_SETTINGS:
            continue
        if name not in ENV_KEYS:
            # A typo here would otherwise be ignored without a word.
            suggestion = _suggest(name, [*ENV_KEYS, *ENV_NOT_SETTINGS])
            raise ConfigError(f"{name}: unknown setting in the environment{suggestion}")
        section, key = ENV_KEYS[name]
        layer.setdefault(section, {})[key] = Value(name, value, True)
    return layer


def _owners() -> dict[str, list[str]]:
    """Each key name, with the sections that have it."""
    owners: dict[str, list[str]] = {}
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            owners.setdefault(f.name, []).append(section)
    return owners


def _override_layer(overrides: Mapping[str, Any]) -> Layer:
    owners = _owners()
    layer: Layer = {}
    for key, value in overrides.items():
        if value is None:
            continue
        if key in (*RULE_LISTS, ACCESS_RULES):
            layer[key] = list(value)  # type: ignore[assignment]
        elif key in HANDLER_SECTIONS:
            layer[key] = value
        elif key in SECTIONS and isinstance(value, Mapping):
            for sub, sub_value in value.items():
                source = f"override {key}.{sub}"
                layer.setdefault(key, {})[sub] = Value(source, sub_value, False)
        elif len(owners.get(key, ())) == 1:
            section = owners[key][0]
            layer.setdefault(section, {})[key] = Value(f"override {key}", value, False)
        elif key in owners:
            choices = " or ".join(f"{s}={{{key!r}: ...}}" for s in owners[key])
            raise ConfigError(f"overrides: {key} is ambiguous: pass {choices}")
        else:
            known = (
                sorted(owners) + sorted(SECTIONS) + [*RULE_LISTS, ACCESS_RULES, *HANDLER_SECTIONS]
            )
            raise ConfigError(f"overrides: unknown setting {key}{_suggest(key, known)}")
    return layer


def _build(merged: Layer, rules: Mapping[str, Any]) -> Settings:
    sections: dict[str, Any] = {}
    for section, cls in SECTIONS.items():
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for key, value in merged.get(section, {}).items():
            if key not in fields:
                raise ConfigError(
                    f"{value.source}: unknown key [{section}] {key}{_suggest(key, list(fields))}"
                )
            values[key] = _coerce(value, section, fields[key])
        if section == "access_rules" and "repositories" in values:
            values["repositories"] = _repositories(merged[section]["repositories"], values)
        sections[section] = cls(**values)
    built_rules: dict[str, Any] = {
        name: _build_rules(source, name, raw) for name, (source, raw) in rules.items()
    }
    settings = Settings(**sections, **built_rules)
    _validate(settings, merged)
    return settings


def _coerce(value: Value, section: str, f: dataclasses.Field[Any]) -> Any:
    where = f"{value.source}: [{section}] {f.name}"
    kind = str(f.type)
    raw, from_env = value.raw, value.textual and isinstance(value.raw, str)
    if f.metadata.get("duration"):
        return parse_duration(raw, where)
    if kind == "bool":
        if isinstance(raw, bool):
            return raw
        if from_env and isinstance(raw, str) and raw.lower() in _BOOLS:
            return _BOOLS[raw.lower()]
        raise ConfigError(f"{where}: expected true or false, got {raw!r}")
    if kind == "int":
        if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
            return raw
        if isinstance(raw, str) and from_env and raw.strip().isascii() and raw.strip().isdigit():
            return int(raw)
        raise ConfigError(f"{where}: expected a whole number >= 0, got {raw!r}")
    if kind == "str":
        if isinstance(raw, str):
            return raw.strip()
        raise ConfigError(f"{where}: expected a string, got {raw!r}")
    if kind.startswith("tuple"):
        if isinstance(raw, str) and from_env:
            raw = [part for part in (p.strip() for p in raw.split(",")) if part]
        if isinstance(raw, list | tuple) and all(isinstance(item, str) for item in raw):
            return tuple(item.strip() for item in raw)
        raise ConfigError(f"{where}: expected a list of strings, got {raw!r}")
    if kind.startswith("Mapping"):
        if isinstance(raw, Mapping) and all(isinstance(v, str) for v in raw.values()):
            return dict(raw)
        raise ConfigError(f"{where}: expected a table of strings, got {raw!r}")
    raise AssertionError(f"no coercion for {kind}")  # pragma: no cover


_BOOLS = {
    "1": True,
    "true": True,
    "yes": True,
    "on": True,
    "0": False,
    "false": False,
    "no": False,
    "off": False,
    "": False,
}


def parse_duration(raw: Any, where: str) -> float:
    """`"60s"`, `"5m"`, `"1h"`, `"250ms"`, or a number of seconds."""
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        seconds = float(raw)
    elif isinstance(raw, str) and (match := DURATION_RE.match(raw)):
        seconds = float(match.group(1)) * DURATION_UNITS[match.group(2)]
    else:
        raise ConfigError(f'{where}: expected a duration like "60s", "5m" or seconds, got {raw!r}')
    if seconds < 0:
        raise ConfigError(f"{where}: a duration cannot be negative, got {raw!r}")
    # nan, inf and huge values would pass here and fail every request later
    # (socket timeouts and clocks overflow).
    if not seconds <= MAX_DURATION:
        raise ConfigError(f"{where}: a duration must be at most 10 years, got {raw!r}")
    return seconds


def _build_rules(source: str, name: str, raw: Any) -> tuple[Rule, ...]:
    rules = []
    for index, entry in enumerate(raw):
        where = f"{source}: [[{name}]] #{index + 1}"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where}: expected a table, got {entry!r}")
        for key in entry:
            if key not in RULE_KEYS:
                raise ConfigError(f"{where}: unknown key {key}{_suggest(key, list(RULE_KEYS))}")
        matchers = [key for key in ("prefix", "glob", "regex") if entry.get(key)]
        if len(matchers) != 1:
            raise ConfigError(f"{where}: set exactly one of prefix, glob or regex")
        for key in ("prefix", "glob", "regex", "aal"):
            if key in entry and not isinstance(entry[key], str):
                raise ConfigError(f"{where}: {key} must be a string, got {entry[key]!r}")
        methods = entry.get("methods", [])
        if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
            raise ConfigError(f"{where}: methods must be a list of strings")
        methods = [m.upper() for m in methods]
        for method in methods:
            if not METHOD_RE.match(method):
                raise ConfigError(f"{where}: methods: not an HTTP method: {method!r}")
        rule = Rule(
            prefix=entry.get("prefix", ""),
            glob=entry.get("glob", ""),
            regex=entry.get("regex", ""),
            methods=tuple(methods),
            aal=entry.get("aal", ""),
        )
        if (rule.prefix or rule.glob) and not (rule.prefix or rule.glob).startswith("/"):
            raise ConfigError(f"{where}: {matchers[0]} must start with '/'")
        if rule.regex:
            try:
                re.compile(rule.regex)
            except (re.error, OverflowError) as exc:  # `a{9999999999}` overflows
                raise ConfigError(f"{where}: regex is invalid: {exc}") from None
        if rule.aal and rule.aal not in AALS:
            raise ConfigError(f"{where}: aal must be one of {', '.join(AALS)}, got {rule.aal!r}")
        rules.append(rule)
    return tuple(rules)


def _build_access_rules(source: str, raw: Any, directory: str) -> tuple[AccessRule, ...]:
    """`[[rule]]` tables: the fields of an Oathkeeper access rule (ory_wsgi.rules.loader)."""
    try:
        return parse_document(list(raw), f"{source} [[rule]]", directory or os.getcwd())
    except RuleError as exc:
        raise ConfigError(str(exc)) from None


def _repositories(value: Value, values: Mapping[str, Any]) -> tuple[str, ...]:
    """Bare paths and relative file:// paths made absolute (against the config file's dir)."""
    resolved = []
    for location in values["repositories"]:
        try:
            repository = parse_repository(location, value.directory or os.getcwd())
        except RuleError as exc:
            raise ConfigError(f"{value.source}: [access_rules] repositories: {exc}") from None
        resolved.append(repository.path if repository.kind == "file" else location)
    return tuple(resolved)


def _validate(settings: Settings, merged: Layer) -> None:
    def where(section: str, key: str) -> str:
        value = merged.get(section, {}).get(key)
        return f"{value.source if value else 'defaults'}: [{section}] {key}"

    proxy = settings.proxy
    if proxy.upstream:
        _check_upstream(proxy.upstream, proxy.upstream_tls, where)
    elif proxy.upstream_tls:
        first = next(key for key in TLS_KEYS if getattr(proxy.upstream_tls, key))
        raise ConfigError(f"{where('proxy', f'upstream_{first}')}: set [proxy] upstream too")
    if proxy.public_url:
        _check_origin(proxy.public_url, where("proxy", "public_url"))
    if proxy.default_redirect_url:
        _check_url(proxy.default_redirect_url, where("proxy", "default_redirect_url"))
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in proxy.protected_cache_control):
        raise ConfigError(
            f"{where('proxy', 'protected_cache_control')}: must be one header line, "
            f"got {proxy.protected_cache_control!r}"
        )
    for cidr in proxy.trusted_proxies:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise ConfigError(
                f"{where('proxy', 'trusted_proxies')}: not an IP network: {cidr!r}"
            ) from None
    if not 0 < settings.server.port < 65536:
        raise ConfigError(f"{where('server', 'port')}: not a port: {settings.server.port}")
    if settings.ory.sdk_url:
        _check_origin(settings.ory.sdk_url, where("ory", "sdk_url"), allow_path=True)
    if settings.ory.project and not re.fullmatch(r"[a-z0-9][a-z0-9-]*", settings.ory.project):
        raise ConfigError(
            f"{where('ory', 'project')}: not a project slug: {settings.ory.project!r}"
        )
    if settings.log.format not in LOG_FORMATS:
        raise ConfigError(f"{where('log', 'format')}: must be json or text")
    if settings.log.level.lower() not in LOG_LEVELS:
        raise ConfigError(f"{where('log', 'level')}: must be one of {', '.join(LOG_LEVELS)}")
    strategy = settings.access_rules.matching_strategy
    if strategy not in STRATEGIES:
        raise ConfigError(
            f"{where('access_rules', 'matching_strategy')}: must be regexp or glob, got"
            f" {strategy!r}{_suggest(strategy, list(STRATEGIES))}"
        )
    if settings.access_rules.no_match_status not in (403, 404):
        raise ConfigError(f"{where('access_rules', 'no_match_status')}: must be 404 or 403")
    if settings.session_cache.max_entries < 1:
        raise ConfigError(f"{where('session_cache', 'max_entries')}: must be at least 1")
    metrics_path = settings.metrics.path
    if (
        not metrics_path.startswith("/")
        or any(c in metrics_path for c in "?#%\\")
        or any(ord(c) < 0x21 for c in metrics_path)
        or (metrics_path.startswith("/.ory/") and not metrics_path.startswith("/.ory/proxy/"))
    ):
        raise ConfigError(
            f"{where('metrics', 'path')}: must be a plain path starting with /, outside"
            f" Ory's /.ory/ (under /.ory/proxy/ is fine), got {metrics_path!r}"
        )

    _validate_fleet(settings, where)


def _validate_fleet(settings: Settings, where: Any) -> None:
    cache = settings.session_cache
    if cache.backend not in CACHE_BACKENDS:
        raise ConfigError(
            f"{where('session_cache', 'backend')}: must be memory or redis, got {cache.backend!r}"
        )
    if cache.redis_url:
        try:
            scheme = urlsplit(cache.redis_url).scheme
        except ValueError as exc:  # e.g. an unclosed IPv6 bracket
            raise ConfigError(f"{where('session_cache', 'redis_url')}: {exc}") from None
        if scheme not in REDIS_SCHEMES:
            raise ConfigError(
                f"{where('session_cache', 'redis_url')}: expected a redis://, rediss://, "
                f"unix:// or redis+sentinel:// URL, got scheme {scheme!r}"
            )
        if cache.redis_cluster and scheme not in ("redis", "rediss"):
            raise ConfigError(
                f"{where('session_cache', 'redis_cluster')}: a cluster is reached by "
                f"redis://host:port[,host:port...] or rediss://..., not {scheme}://"
            )
    elif cache.backend == "redis":
        raise ConfigError(
            f"{where('session_cache', 'backend')}: redis needs [session_cache] redis_url "
            '(e.g. "redis://127.0.0.1:6379/0", or ORY_WSGI_SESSION_CACHE_REDIS_URL)'
        )
    keys_backend = settings.jwt.keys_backend
    if keys_backend not in KEYS_BACKENDS:
        raise ConfigError(
            f"{where('jwt', 'keys_backend')}: must be file or redis, got {keys_backend!r}"
        )
    if keys_backend == "redis" and not cache.redis_url:
        raise ConfigError(
            f"{where('jwt', 'keys_backend')}: redis needs [session_cache] redis_url "
            "(the key set is kept in that Redis)"
        )
    if cache.redis_url and not 0 < cache.redis_timeout <= 10:
        raise ConfigError(
            f"{where('session_cache', 'redis_timeout')}: must be more than 0 and at most 10s"
        )


def _check_upstream(value: str, tls: TLSOptions, where: Callable[[str, str], str]) -> None:
    """`http(s)://host[:port]` or `unix:PATH`, and its TLS files loadable (once, at startup)."""
    try:
        target = parse_upstream(value, tls)
    except ValueError as exc:
        raise ConfigError(f"{where('proxy', 'upstream')}: {exc}") from None
    if not target.is_unix:
        _check_origin(value, where("proxy", "upstream"))
    ssl_context(target, lambda key: where("proxy", f"upstream_{key}"))


def _check_url(value: str, where: str) -> None:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise ConfigError(f"{where}: not a URL: {value!r} ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where}: not an http(s) URL: {value!r}")


def _check_origin(value: str, where: str, allow_path: bool = False) -> None:
    _check_url(value, where)
    parts = urlsplit(value)
    if not allow_path and parts.path not in ("", "/"):
        raise ConfigError(f"{where}: must not have a path, got {parts.path!r} in {value!r}")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigError(f"{where}: must be scheme://host[:port] only, got {value!r}")


def _roots() -> list[str]:
    return [*SECTIONS, *RULE_LISTS, ACCESS_RULES, *HANDLER_SECTIONS]


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def describe(settings: Settings) -> dict[str, Any]:
    """The merged settings as plain data, secrets masked (for `check-config`)."""
    data = dataclasses.asdict(settings)
    for section, key in SECRET_KEYS:
        if data[section][key]:
            data[section][key] = "********"
    return data
