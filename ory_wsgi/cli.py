"""The `ory-wsgi` command: run the proxy on the dev server, check a config, manage keys, demo."""

from __future__ import annotations

import argparse
import json
import os
import sys
import webbrowser
from collections.abc import Sequence
from typing import Any

from ory_wsgi import __version__
from ory_wsgi.errors import ConfigError
from ory_wsgi.settings import Settings, describe, load_settings

DESCRIPTION = """\
ory-wsgi puts your application and Ory on one domain: every request is
forwarded to the application, /.ory/* is forwarded to Ory, and the
application receives the user's session as a signed JWT.

In production run it under gunicorn:
    gunicorn -k gthread --threads 8 'ory_wsgi:make_app("ory.toml")'
"""

RUN_EXAMPLES = """\
examples:
  ory-wsgi run http://127.0.0.1:3000
  ory-wsgi run http://127.0.0.1:3000 https://app.example.com --project my-slug
  ory-wsgi run -c ory.toml --port 8080

Settings come from the config file, then the environment (ORY_SDK_URL,
ORY_PROJECT, ORY_PROJECT_API_KEY, PORT, ORY_WSGI_<SECTION>_<KEY>), then
these flags. See ory.toml.example for every setting.
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args))
    except ConfigError as exc:
        print(f"ory-wsgi: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ory-wsgi",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"ory-wsgi {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run the proxy on werkzeug's development server",
        description="Run the proxy on werkzeug's development server (use gunicorn in production).",
        epilog=RUN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "upstream", nargs="?", help="the application's URL, e.g. http://127.0.0.1:3000"
    )
    run.add_argument(
        "public_url", nargs="?", help="where users reach the proxy (default http://localhost:PORT)"
    )
    _add_config_flag(run)
    run.add_argument("--port", type=int, help="port to listen on (default $PORT, else 4000)")
    run.add_argument("--host", help="address to bind (default 127.0.0.1)")
    run.add_argument("--sdk-url", help="Ory's URL (Kratos public API or Ory Network project URL)")
    run.add_argument("--project", help="Ory Network project slug (instead of --sdk-url)")
    run.add_argument("--cookie-domain", help="Domain attribute for Ory's cookies")
    run.add_argument("--no-jwt", action="store_true", help="do not mint JWTs for the application")
    run.add_argument(
        "--protect-path-prefix",
        action="append",
        default=[],
        metavar="PREFIX",
        help="require a session under this path (repeatable)",
    )
    run.add_argument(
        "--allowed-cors-origins",
        action="append",
        default=[],
        metavar="ORIGINS",
        help="origins allowed to call with credentials (comma-separated, repeatable)",
    )
    run.add_argument(
        "--additional-cors-headers",
        action="append",
        default=[],
        metavar="HEADERS",
        help="extra request headers allowed by CORS (comma-separated, repeatable)",
    )
    run.add_argument("--default-redirect-url", help="where Ory's welcome page sends users")
    run.add_argument(
        "--rewrite-host", action="store_true", help="send the upstream its own Host header"
    )
    run.add_argument("--open", action="store_true", help="open the public URL in a browser")
    run.add_argument("--debug", action="store_true", help="debug logging in a human format")
    run.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    run.add_argument(
        "--reload",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="restart when code or the config file changes (default: on)",
    )
    run.set_defaults(handler=cmd_run)

    check = commands.add_parser(
        "check-config", help="validate the settings and print them (secrets masked)"
    )
    _add_config_flag(check)
    check.set_defaults(handler=cmd_check_config)

    keys = commands.add_parser("keys", help="manage the JWT signing key set")
    key_commands = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    generate = key_commands.add_parser("generate", help="write a new ES256 key set (mode 0600)")
    generate.add_argument("file")
    generate.set_defaults(handler=cmd_keys_generate)
    rotate = key_commands.add_parser(
        "rotate", help="add a new signing key first, keep the old ones for verification"
    )
    rotate.add_argument("file", nargs="?", help="the key file (or -c: the key set in Redis)")
    _add_config_flag(rotate)
    rotate.set_defaults(handler=cmd_keys_rotate)

    rules = commands.add_parser(
        "rules", help="check access rules, explain which rule a request gets"
    )
    rule_commands = rules.add_subparsers(dest="rules_command", metavar="ACTION", required=True)
    rules_check = rule_commands.add_parser(
        "check",
        help="load the settings and every access rule; exit 0, or 2 naming the file and rule",
    )
    _add_config_flag(rules_check)
    rules_check.set_defaults(handler=cmd_rules_check)
    rules_explain = rule_commands.add_parser(
        "explain",
        help="which rule a request gets, why the others do not, and what each handler"
        " decides; exit 0 allowed, 1 refused, 2 usage or configuration error",
    )
    rules_explain.add_argument("method", metavar="METHOD", help="e.g. GET")
    rules_explain.add_argument("url", metavar="URL", help="e.g. https://app.example.com/api/x")
    rules_explain.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="a request header (repeatable), e.g. -H 'Cookie: ory_kratos_session=x'",
    )
    rules_explain.add_argument(
        "--session",
        metavar="FILE",
        help="the JSON Ory's whoami answers for the request's cookie or token (- : stdin)",
    )
    rules_explain.add_argument(
        "--ory", metavar="URL", help="ask this Ory (or stand-in) for the session instead"
    )
    rules_explain.add_argument(
        "--call",
        action="store_true",
        help="send the requests of service authorizers (ory_permissions, remote_json);"
        " by default they are shown, not sent",
    )
    _add_config_flag(rules_explain)
    rules_explain.set_defaults(handler=cmd_rules_explain)

    sessions = commands.add_parser("sessions", help="act on the fleet's cached sessions")
    session_commands = sessions.add_subparsers(
        dest="sessions_command", metavar="ACTION", required=True
    )
    revoke = session_commands.add_parser(
        "revoke",
        help="drop a session from every worker's cache (needs backend = redis; "
        "does not end it in Ory)",
    )
    revoke.add_argument("session_id", metavar="ID")
    _add_config_flag(revoke)
    revoke.set_defaults(handler=cmd_sessions_revoke)

    demo = commands.add_parser(
        "demo", help="the proxy, a sample app and a local Ory stand-in, all on loopback"
    )
    demo.add_argument("--port", type=int, default=4000, help="the proxy's port (default 4000)")
    demo.set_defaults(handler=cmd_demo)
    return parser


def _add_config_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        default=os.environ.get("ORY_WSGI_CONFIG"),
        metavar="FILE",
        help="TOML settings file (default $ORY_WSGI_CONFIG)",
    )


def _split(values: list[str]) -> list[str]:
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def run_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The flags of `ory-wsgi run` as settings overrides (TOML key names)."""
    overrides: dict[str, Any] = {
        "proxy": {},
        "server": {},
        "ory": {},
        "jwt": {},
        "cors": {},
        "log": {},
    }
    for flag, section, key in (
        ("upstream", "proxy", "upstream"),
        ("public_url", "proxy", "public_url"),
        ("default_redirect_url", "proxy", "default_redirect_url"),
        ("port", "server", "port"),
        ("host", "server", "host"),
        ("sdk_url", "ory", "sdk_url"),
        ("project", "ory", "project"),
        ("cookie_domain", "ory", "cookie_domain"),
    ):
        value = getattr(args, flag)
        if value is not None:
            overrides[section][key] = value
    if args.rewrite_host:
        overrides["proxy"]["rewrite_host"] = True
    if args.no_jwt:
        overrides["jwt"]["enabled"] = False
    if args.allowed_cors_origins:
        overrides["cors"]["allowed_origins"] = _split(args.allowed_cors_origins)
    if args.additional_cors_headers:
        overrides["cors"]["additional_headers"] = _split(args.additional_cors_headers)
    if args.debug:
        overrides["log"] = {"level": "debug", "format": "text"}
    elif args.quiet:
        overrides["log"]["level"] = "warning"
    if args.protect_path_prefix:
        overrides["protect"] = [{"prefix": prefix} for prefix in args.protect_path_prefix]
    return {key: value for key, value in overrides.items() if value}


def cmd_run(args: argparse.Namespace) -> int:
    from werkzeug.serving import is_running_from_reloader, run_simple

    from ory_wsgi.app import build_app, public_url
    from ory_wsgi.devserver import OwnDateAndServer, QuietRequestHandler

    settings = load_settings(args.config, overrides=run_overrides(args))
    app = OwnDateAndServer(build_app(settings))
    url = public_url(settings)
    if not is_running_from_reloader():
        print(
            f"ory-wsgi {__version__}: {url} -> {settings.proxy.upstream}"
            + (f" (Ory: {settings.ory_url})" if settings.ory_url else ""),
            file=sys.stderr,
        )
        if args.open:
            webbrowser.open(url)
    run_simple(
        settings.server.host,
        settings.server.port,
        app,
        use_reloader=args.reload,
        extra_files=[args.config] if args.config else None,
        threaded=True,
        request_handler=QuietRequestHandler,
    )
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    from ory_wsgi.app import public_url

    settings: Settings = load_settings(args.config)
    data = describe(settings)
    data["effective"] = {"public_url": public_url(settings), "ory_url": settings.ory_url}
    print(json.dumps(data, indent=2, sort_keys=False))
    return 0


def cmd_keys_generate(args: argparse.Namespace) -> int:
    from ory_wsgi.keys import generate_key_set_file

    generate_key_set_file(args.file)
    print(f"wrote a new ES256 key set to {args.file}")
    return 0


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    from ory_wsgi.keys import rotate_key_set_file

    if not args.file:
        from ory_wsgi.fleet.revoke import RedisUnreachable, rotate_redis_keys

        try:
            kid = rotate_redis_keys(args.config)
        except RedisUnreachable as exc:
            print(f"ory-wsgi: {exc}", file=sys.stderr)
            return 1
        print(f"added signing key {kid} to the key set in Redis; every worker uses it within 3s")
        return 0
    rotate_key_set_file(args.file)
    print(f"added a new signing key to {args.file}; the old keys are still published")
    return 0


def cmd_rules_check(args: argparse.Namespace) -> int:
    from ory_wsgi.rules.loader import load_rule_set
    from ory_wsgi.rules.matcher import Matcher

    settings = load_settings(args.config)
    rule_set = load_rule_set(settings)
    matcher = Matcher(rule_set)
    for rule in rule_set.rules:
        if rule.match is not None and not rule.match.methods:
            print(f"warning: {rule.where}: match.methods is empty: it matches no request")
    for first, second in matcher.ties():
        print(
            f"warning: {second.where}: ties with rule {first.id!r} ({first.source}):"
            f" same method, literal prefix, priority and specificity; {first.id!r} wins"
            " where both match (loaded first); set priority to decide"
        )
    if rule_set.invalid:
        for rule in rule_set.invalid:
            print(f"ory-wsgi: {rule.invalid}", file=sys.stderr)
        return 2
    inline, sources = len(settings.rule), len(rule_set.sources)
    default = f", default rule {rule_set.default_rule!r}" if rule_set.default_rule else ""
    print(
        f"ok: {len(rule_set.rules)} access rules ({len(rule_set.rules) - inline} from"
        f" {sources} {'repository' if sources == 1 else 'repositories'}, {inline} from"
        f" [[rule]]); {rule_set.strategy} matching{default}"
    )
    return 0


def cmd_rules_explain(args: argparse.Namespace) -> int:
    from ory_wsgi.explain import explain

    headers = []
    for header in args.header:
        name, colon, value = header.partition(":")
        if not colon or not name.strip() or name != name.strip():
            raise ConfigError(f"-H {header!r}: expected 'Name: value'")
        headers.append((name, value.strip()))
    session: bytes | None = None
    if args.session == "-":
        session = sys.stdin.buffer.read()
    elif args.session:
        try:
            with open(args.session, "rb") as file:
                session = file.read()
        except OSError as exc:
            raise ConfigError(f"--session {args.session}: {exc.strerror}") from None
    if session is not None:
        try:
            parsed = json.loads(session)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise ConfigError("--session: expected the JSON object Ory's whoami answers")
    explanation = explain(
        load_settings(args.config),
        args.method,
        args.url,
        headers=headers,
        session=session,
        ory_url=args.ory or "",
        call=args.call,
    )
    print(explanation.text, end="")
    return explanation.code


def cmd_sessions_revoke(args: argparse.Namespace) -> int:
    from ory_wsgi.fleet.revoke import RevocationFailed, revoke

    try:
        dropped = revoke(args.session_id, args.config)
    except RevocationFailed as exc:
        print(f"ory-wsgi: {exc}", file=sys.stderr)
        return 1
    print(f"revoked session {args.session_id}: {dropped} shared cache entries dropped")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    try:
        from ory_wsgi.demo import run_demo
    except ImportError as exc:
        if (exc.name or "").partition(".")[0] != "requests":
            raise
        # The demo's sample app calls Ory with requests, as a user's app would.
        print("ory-wsgi: the demo needs requests: pip install 'ory_wsgi[demo]'", file=sys.stderr)
        return 1
    return run_demo(args.port)


if __name__ == "__main__":
    sys.exit(main())
