"""Settings: precedence, types, durations, and one-line errors that name source and key."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from servers import ROOT, free_port

from ory_wsgi import ConfigError, make_app
from ory_wsgi.settings import Settings, describe, load_settings
from ory_wsgi.startup_check import app_factory_call


def toml(tmp_path: Path, text: str, name: str = "ory.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def config_error(
    path: Path | None = None, env: dict[str, str] | None = None, **overrides: Any
) -> str:
    with pytest.raises(ConfigError) as error:
        load_settings(path, env=env or {}, overrides=overrides)
    message = str(error.value)
    assert "\n" not in message, "a ConfigError is one line"
    return message


# -- precedence -------------------------------------------------------------------------


def test_defaults_apply_when_nothing_is_set() -> None:
    settings = load_settings(None, env={})
    assert settings == Settings()
    assert (settings.proxy.connect_timeout, settings.proxy.read_timeout) == (5.0, 120.0)
    assert (settings.proxy.max_body_size, settings.proxy.trusted_proxies) == (0, ())
    assert settings.proxy.rewrite_host is False


def test_toml_wins_over_defaults(tmp_path: Path) -> None:
    path = toml(tmp_path, '[proxy]\nread_timeout = "60s"\n[server]\nport = 5000\n')
    settings = load_settings(path, env={})
    assert (settings.proxy.read_timeout, settings.server.port) == (60.0, 5000)
    assert settings.proxy.connect_timeout == 5.0


def test_environment_wins_over_toml(tmp_path: Path) -> None:
    path = toml(tmp_path, '[proxy]\nread_timeout = "60s"\n[server]\nport = 5000\n')
    settings = load_settings(path, env={"ORY_WSGI_PROXY_READ_TIMEOUT": "30s", "PORT": "6000"})
    assert (settings.proxy.read_timeout, settings.server.port) == (30.0, 6000)


def test_overrides_win_over_environment(tmp_path: Path) -> None:
    path = toml(tmp_path, '[proxy]\nread_timeout = "60s"\n')
    settings = load_settings(
        path,
        env={"ORY_WSGI_PROXY_READ_TIMEOUT": "30s"},
        overrides={"read_timeout": "10s", "jwt": {"ttl": "5m"}},
    )
    assert (settings.proxy.read_timeout, settings.jwt.ttl) == (10.0, 300.0)


def test_none_override_leaves_the_lower_layer_alone() -> None:
    settings = load_settings(
        None, env={"ORY_WSGI_PROXY_UPSTREAM": "http://127.0.0.1:3000"}, overrides={"upstream": None}
    )
    assert settings.proxy.upstream == "http://127.0.0.1:3000"


def test_ory_environment_names_are_read() -> None:
    settings = load_settings(
        None,
        env={
            "ORY_PROJECT": "my-project",
            "ORY_PROJECT_API_KEY": "ory_pat_secret",
            "ORY_RATE_LIMIT_HEADER": "rl-key",
            "PORT": "8080",
        },
    )
    assert settings.ory_url == "https://my-project.projects.oryapis.com"
    assert (settings.ory.api_key, settings.ory.rate_limit_header) == ("ory_pat_secret", "rl-key")
    assert settings.server.port == 8080


def test_project_from_a_higher_layer_replaces_sdk_url_from_a_lower_one(tmp_path: Path) -> None:
    path = toml(tmp_path, '[ory]\nsdk_url = "http://127.0.0.1:4433"\n')
    settings = load_settings(path, env={"ORY_PROJECT": "slug"})
    assert (settings.ory.sdk_url, settings.ory_url) == ("", "https://slug.projects.oryapis.com")


def test_sdk_url_and_project_both_in_environment_is_an_error() -> None:
    message = config_error(env={"ORY_SDK_URL": "http://127.0.0.1:4433", "ORY_PROJECT": "slug"})
    assert message.startswith("environment: [ory] sdk_url and project are both set")
    assert "ORY_SDK_URL" in message and "ORY_PROJECT" in message


def test_sdk_url_and_project_both_in_toml_is_an_error(tmp_path: Path) -> None:
    path = toml(tmp_path, '[ory]\nsdk_url = "http://127.0.0.1:4433"\nproject = "slug"\n')
    message = config_error(path)
    assert message.startswith(f"{path}: [ory] sdk_url and project are both set")


# -- values -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        ("60s", 60.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("250ms", 0.25),
        ("1.5s", 1.5),
        ("7", 7.0),
        (30, 30.0),
        (0.5, 0.5),
        (0, 0.0),
    ],
)
def test_durations_are_strings_with_units_or_seconds(raw: Any, seconds: float) -> None:
    assert load_settings(None, env={}, overrides={"read_timeout": raw}).proxy.read_timeout == (
        seconds
    )


@pytest.mark.parametrize("raw", ["soon", "5 minutes", "1d", "-1s", -1, True, [1]])
def test_bad_duration_is_an_error_naming_the_key(raw: Any) -> None:
    message = config_error(read_timeout=raw)
    assert message.startswith("override read_timeout: [proxy] read_timeout: ")
    assert "duration" in message


def test_durations_from_the_environment() -> None:
    env = {"ORY_WSGI_JWT_TTL": "2m", "ORY_WSGI_SESSION_CACHE_TTL": "0"}
    settings = load_settings(None, env=env)
    assert (settings.jwt.ttl, settings.session_cache.ttl) == (120.0, 0.0)


def test_lists_from_the_environment_are_comma_separated() -> None:
    env = {
        "ORY_WSGI_PROXY_TRUSTED_PROXIES": "10.0.0.0/8, 192.168.0.0/16,",
        "ORY_WSGI_CORS_ALLOWED_ORIGINS": "https://a.example.com,https://*.b.example.com",
    }
    settings = load_settings(None, env=env)
    assert settings.proxy.trusted_proxies == ("10.0.0.0/8", "192.168.0.0/16")
    assert settings.cors.allowed_origins == ("https://a.example.com", "https://*.b.example.com")


@pytest.mark.parametrize(("raw", "value"), [("true", True), ("1", True), ("off", False)])
def test_booleans_from_the_environment(raw: str, value: bool) -> None:
    assert load_settings(None, env={"ORY_WSGI_PROXY_REWRITE_HOST": raw}).proxy.rewrite_host is value


def test_lists_in_toml_stay_lists(tmp_path: Path) -> None:
    path = toml(tmp_path, '[proxy]\ntrusted_proxies = ["10.0.0.0/8", "::1/128"]\n')
    assert load_settings(path, env={}).proxy.trusted_proxies == ("10.0.0.0/8", "::1/128")


def test_settings_are_frozen() -> None:
    settings = load_settings(None, env={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.proxy.upstream = "http://elsewhere"  # type: ignore[misc]


def test_describe_masks_the_api_key() -> None:
    settings = load_settings(None, env={"ORY_PROJECT_API_KEY": "ory_pat_secret"})
    assert describe(settings)["ory"]["api_key"] == "********"
    assert "ory_pat_secret" not in repr(describe(settings))


# -- one-line errors --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[proxy]\nupstrem = "http://x"\n', "unknown key [proxy] upstrem (did you mean upstream?)"),
        ("[jwtt]\nttl = 1\n", "unknown section [jwtt] (did you mean jwt?)"),
        ('upstream = "http://x"\n', "upstream must be set inside a section (did you mean [proxy]"),
        ("proxy = 1\n", "[proxy] must be a table"),
        ('[proxy]\nrewrite_host = "yes"\n', "[proxy] rewrite_host: expected true or false"),
        ("[proxy]\nmax_body_size = -1\n", "[proxy] max_body_size: expected a whole number >= 0"),
        ("[proxy]\nupstream = 3000\n", "[proxy] upstream: expected a string"),
        (
            '[proxy]\npublic_url = "https://app.example.com/app"\n',
            "[proxy] public_url: must not have a path",
        ),
        ('[proxy]\nupstream = "http://[::1"\n', "[proxy] upstream: not a URL"),
        ('[proxy]\nupstream = "ftp://files"\n', "[proxy] upstream: not an http(s) URL"),
        (
            '[proxy]\ntrusted_proxies = ["10.0.0.0/33"]\n',
            "[proxy] trusted_proxies: not an IP network",
        ),
        ("[server]\nport = 70000\n", "[server] port: not a port"),
        ('[log]\nformat = "xml"\n', "[log] format: must be json or text"),
        ('[ory]\nproject = "Not A Slug"\n', "[ory] project: not a project slug"),
        ('[[protect]]\nregex = "("\n', "[[protect]] #1: regex is invalid"),
        ('[[protect]]\nprefix = "/a"\nglob = "/b/**"\n', "[[protect]] #1: set exactly one of"),
        ('[[protect]]\nprefx = "/a"\n', "[[protect]] #1: unknown key prefx (did you mean prefix?)"),
        (
            '[[public]]\nprefix = "/a"\n[[public]]\nprefix = "b"\n',
            "[[public]] #2: prefix must start",
        ),
        ('[[protect]]\nprefix = "/a"\naal = "aal9"\n', "[[protect]] #1: aal must be one of"),
    ],
)
def test_bad_toml_setting_is_one_line_naming_file_and_key(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = toml(tmp_path, text)
    message = config_error(path)
    assert message.startswith(f"{path}: ")
    assert expected in message


def test_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = toml(tmp_path, '[proxy]\nupstream = "http://x"\nread_timeout = = 3\n')
    message = config_error(path)
    assert message.startswith(f"{path}: invalid TOML")
    assert "line 3" in message


def test_missing_toml_file_is_an_error(tmp_path: Path) -> None:
    assert config_error(tmp_path / "nope.toml") == f"{tmp_path / 'nope.toml'}: no such file"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"ORY_WSGI_PROXY_READ_TIMEOUT": "soon"},
            "ORY_WSGI_PROXY_READ_TIMEOUT: [proxy] read_timeout",
        ),
        (
            {"ORY_WSGI_PROXY_REWRITE_HOST": "maybe"},
            "ORY_WSGI_PROXY_REWRITE_HOST: [proxy] rewrite_host",
        ),
        ({"PORT": "http"}, "PORT: [server] port: expected a whole number"),
        ({"ORY_SDK_URL": "not a url"}, "ORY_SDK_URL: [ory] sdk_url: not an http(s) URL"),
        ({"ORY_WSGI_PROXY_UPSTREM": "http://x"}, "(did you mean ORY_WSGI_PROXY_UPSTREAM?)"),
    ],
)
def test_bad_environment_setting_is_one_line_naming_the_variable(
    env: dict[str, str], expected: str
) -> None:
    message = config_error(env=env)
    assert message.startswith(next(iter(env)) + ": ")
    assert expected in message


def test_environment_names_outside_the_settings_are_left_alone() -> None:
    load_settings(None, env={"ORY_WSGI_CONFIG": "ory.toml", "ORY_OTHER": "x", "HOME": "/root"})


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"upstrem": "http://x"}, "overrides: unknown setting upstrem (did you mean upstream?)"),
        ({"ttl": "1s"}, "overrides: ttl is ambiguous"),
        ({"proxy": {"upstrem": "x"}}, "override proxy.upstrem: unknown key [proxy] upstrem"),
        (
            {"upstream": "http://h/path"},
            "override upstream: [proxy] upstream: must not have a path",
        ),
        ({"sdk_url": "http://a", "project": "b"}, "overrides: [ory] sdk_url and project are both"),
    ],
)
def test_bad_override_is_one_line_naming_the_key(overrides: dict[str, Any], expected: str) -> None:
    assert expected in config_error(**overrides)


# -- at startup -------------------------------------------------------------------------


def test_make_app_with_a_bad_setting_raises_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^override upstream: \[proxy\] upstream: not an http"):
        make_app(upstream="ftp://files")


def test_make_app_with_a_bad_file_raises_config_error(tmp_path: Path) -> None:
    path = toml(tmp_path, '[proxy]\nupstream = "http://127.0.0.1:3000"\nread_timeout = "soon"\n')
    with pytest.raises(ConfigError, match=r"\[proxy\] read_timeout: expected a duration"):
        make_app(path)


def start_gunicorn(
    tmp_path: Path, path: Path, *options: str, timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """gunicorn serving make_app(`path`) with `options`, run to its exit (a bad start)."""
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "--bind",
        f"127.0.0.1:{free_port()}",
        "--no-control-socket",
        *options,
        f'ory_wsgi:make_app("{path}")',
    ]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **(env or {})},
    )


def test_gunicorn_with_a_bad_file_exits_with_the_error_line(tmp_path: Path) -> None:
    path = toml(tmp_path, '[proxy]\nupstream = "http://127.0.0.1:3000"\nread_timout = "5s"\n')
    expected = f"{path}: unknown key [proxy] read_timout (did you mean read_timeout?)"
    result = start_gunicorn(tmp_path, path, timeout=30)
    assert result.returncode != 0
    assert expected in result.stdout + result.stderr


# -- bad settings under gunicorn: one line, exit code 4, every time ----------------------

UPSTREAM = 'upstream = "http://127.0.0.1:3000"\n'
BAD_STARTS = {
    "typo": ("[proxy]\n" + UPSTREAM + 'read_timout = "5s"\n', "unknown key [proxy] read_timout"),
    "toml-syntax": ("[proxy\n", "line 1"),
    "bad-url": ('[proxy]\nupstream = "nope"\n', "[proxy] upstream: not an http(s) URL"),
    "no-upstream": ('[proxy]\npublic_url = "https://app.example.com"\n', "upstream is not set"),
    "protect-without-ory": (
        "[proxy]\n" + UPSTREAM + '[[protect]]\nprefix = "/members"\n',
        "[[protect]] needs Ory",
    ),
    "state-dir-open": (
        "[proxy]\n" + UPSTREAM + 'state_dir = "open"\n[ory]\nsdk_url = "http://127.0.0.1:9"\n',
        "the state directory is writable by group or others",
    ),
}
GUNICORN_STARTS = {
    "plain": ["--workers", "3"],
    "plain-gthread": ["--workers", "4", "--worker-class", "gthread", "--threads", "4"],
    "shipped-config": ["--config", "python:ory_wsgi.gunicorn_conf", "--workers", "3"],
    "preload": ["--workers", "3", "--preload"],
}


# Every kind of bad setting with the plain command (where workers must agree on who
# reports), and a spread of kinds with the other ways to start.
CASES = [("plain", bad) for bad in BAD_STARTS] + [
    ("plain-gthread", "typo"),
    ("plain-gthread", "state-dir-open"),
    ("shipped-config", "typo"),
    ("shipped-config", "toml-syntax"),
    ("shipped-config", "no-upstream"),
    ("shipped-config", "state-dir-open"),
    ("preload", "bad-url"),
    ("preload", "protect-without-ory"),
]


@pytest.mark.parametrize(("start", "bad"), CASES, ids=[f"{s}-{b}" for s, b in CASES])
def test_gunicorn_with_a_bad_setting_prints_one_line_and_exits_4(
    tmp_path: Path, start: str, bad: str
) -> None:
    text, expected = BAD_STARTS[bad]
    path = toml(tmp_path, text)
    (tmp_path / "open").mkdir(mode=0o777)
    (tmp_path / "open").chmod(0o777)
    result = start_gunicorn(
        tmp_path, path, *GUNICORN_STARTS[start], timeout=60, env={"PORT": str(free_port())}
    )
    output = result.stdout + result.stderr
    ours = [line for line in output.splitlines() if expected in line]
    assert len(ours) == 1, output
    assert "Traceback" not in output and "HaltServer" not in output, output
    assert result.returncode == 4, output


@pytest.mark.parametrize(
    ("app_uri", "call"),
    [
        ('ory_wsgi:make_app("ory.toml")', (["ory.toml"], {})),
        ("ory_wsgi:make_app()", ([], {})),
        (
            'ory_wsgi.app:make_app(config="a.toml", upstream="http://a")',
            ([], {"config": "a.toml", "upstream": "http://a"}),
        ),
        ("myapp:application", None),
        ('myapp:make_app("ory.toml")', None),
        ('ory_wsgi:make_app(os.environ["CONFIG"])', None),
        ("ory_wsgi:make_app(", None),
        (None, None),
    ],
)
def test_the_master_check_reads_the_app_uri_as_gunicorn_does(app_uri: Any, call: Any) -> None:
    assert app_factory_call(app_uri) == call
