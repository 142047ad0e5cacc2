"""Bad settings under gunicorn: one line and exit code 4, every time.

    check_in_master(server)              # the shipped gunicorn config's on_starting
    startup_failure(error)               # make_app, for any ConfigError (never returns)

gunicorn stops when a worker exits with code 4 (the app failed to load), but
when a second worker also exits with 4 while the master is stopping,
gunicorn 27 raises its `HaltServer` again from inside its own handler: a
30-line traceback after our line, and exit code 1. So the settings are
judged once, where that cannot happen:

- under the shipped config, in the master before any worker starts
  (`check_in_master`, its `on_starting` hook): the app is built once there,
  as `--preload` would, and thrown away; a bad setting prints its line and
  the master exits 4;
- with `--preload`, `make_app` runs in the master, where gunicorn does not
  catch the error: the line is printed and the master exits 4;
- with the plain command (`gunicorn 'ory_wsgi:make_app("ory.toml")'`) no
  ory_wsgi code runs in the master, so the workers agree on one to report:
  the first of the master's workers to fail prints the line and exits 4
  (gunicorn then stops); the others print nothing and wait until the
  master, stopping, has told them to leave (gunicorn's SIGTERM handler marks
  the worker not alive, whether before or after it failed). The agreement
  is a file created with O_EXCL in a directory only this user may write
  (`<tmp>/ory-wsgi-<uid>/`), named after the master's pid and start time.
  Where that directory cannot be trusted, every worker reports, as gunicorn
  alone would.

gunicorn is imported only when it is the one running us (it is then in
`sys.modules` already): the embedded middleware and the dev server call
`make_app`'s code too, and need not have gunicorn installed.
"""

from __future__ import annotations

import ast
import functools
import os
import stat
import sys
import tempfile
import time
from types import FrameType
from typing import Any, NoReturn

from ory_wsgi.errors import ConfigError

APP_LOAD_ERROR = 4
"""gunicorn's exit code for "the app failed to load" (`Arbiter.APP_LOAD_ERROR`)."""
APP_FACTORIES = frozenset({"ory_wsgi:make_app", "ory_wsgi.app:make_app"})
# A worker that lets another report waits at most this long for the master's
# SIGTERM, then reports itself rather than hang.
WAIT_FOR_MASTER = 15.0


def check_in_master(server: Any) -> None:
    """gunicorn `on_starting`: build the app once in the master; a bad setting exits 4.

    Does nothing when the app gunicorn serves is not `ory_wsgi:make_app(...)`.
    """
    call = app_factory_call(getattr(server.app, "app_uri", None) or server.cfg.wsgi_app)
    if call is None:
        return
    from ory_wsgi.app import build_app
    from ory_wsgi.settings import load_settings

    args, kwargs = call
    config = args[0] if args else kwargs.pop("config", None)
    try:
        build_app(load_settings(config, overrides=kwargs))
    except ConfigError as error:
        pidfile = getattr(server, "pidfile", None)
        if pidfile is not None:
            pidfile.unlink()
        _exit_with_line(str(error))


def app_factory_call(app_uri: object) -> tuple[list[Any], dict[str, Any]] | None:
    """The literal arguments of `ory_wsgi:make_app(...)` as gunicorn reads them, else None."""
    if not isinstance(app_uri, str):
        return None
    module, _, expression = app_uri.partition(":")
    try:
        call = ast.parse(expression, mode="eval").body
    except SyntaxError:
        return None
    if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name):
        return None
    if f"{module}:{call.func.id}" not in APP_FACTORIES:
        return None
    try:
        args = [ast.literal_eval(arg) for arg in call.args]
        kwargs = {str(kw.arg): ast.literal_eval(kw.value) for kw in call.keywords}
    except ValueError:
        return None
    return args, kwargs


def startup_failure(error: ConfigError) -> NoReturn:
    """Stop the start for a bad setting, in the way that suits where make_app runs."""
    message = str(error)
    where, worker = _gunicorn_caller()
    if where == "master":
        _exit_with_line(message)
    if where == "worker" and not _first_to_report(os.getppid()):
        _wait_for_master(worker)
    if "gunicorn.errors" in sys.modules:
        raise _startup_config_error()(message)
    raise ConfigError(message)


@functools.cache
def _startup_config_error() -> type[ConfigError]:
    """A ConfigError that is also gunicorn's AppImportError: it prints the line, no traceback."""
    from gunicorn.errors import AppImportError

    class StartupConfigError(ConfigError, AppImportError):  # type: ignore[misc]
        """A ConfigError from `make_app` in a gunicorn worker."""

    return StartupConfigError


def _exit_with_line(message: str) -> NoReturn:
    print(message, file=sys.stderr, flush=True)
    sys.exit(APP_LOAD_ERROR)


def _gunicorn_caller() -> tuple[str, Any]:
    """("master", arbiter) under --preload, ("worker", worker), or ("", None) without gunicorn."""
    if "gunicorn.arbiter" not in sys.modules:
        return "", None
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        filename = code.co_filename.replace("\\", "/")
        if "/gunicorn/" in filename:
            if code.co_name == "load_wsgi" and filename.endswith("/workers/base.py"):
                return "worker", frame.f_locals.get("self")
            if code.co_name == "setup" and filename.endswith("/arbiter.py"):
                return "master", frame.f_locals.get("self")
        frame = frame.f_back
    return "", None


def _first_to_report(master: int) -> bool:
    """True in exactly one failing worker of `master` (or in every one, if unsure)."""
    uid = os.geteuid()
    directory = os.path.join(tempfile.gettempdir(), f"ory-wsgi-{uid}")
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return True
    try:
        status = os.lstat(directory)
    except OSError:
        return True
    if not stat.S_ISDIR(status.st_mode) or status.st_uid != uid or status.st_mode & 0o077:
        return True
    marker = os.path.join(directory, f"config-error-{master}-{_start_time(master)}")
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600))
    except FileExistsError:
        return False
    except OSError:
        return True
    _remove_stale_markers(directory)
    return True


def _start_time(pid: int) -> str:
    """The process' start time (clock ticks since boot): a pid is reused, this pair is not."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            fields = file.read().rpartition(b")")[2].split()
        return fields[19].decode()
    except (OSError, IndexError):
        return "0"


def _remove_stale_markers(directory: str) -> None:
    for name in os.listdir(directory):
        if not name.startswith("config-error-"):
            continue
        try:
            os.kill(int(name.split("-")[2]), 0)
        except (ValueError, IndexError):
            continue
        except ProcessLookupError:
            try:
                os.unlink(os.path.join(directory, name))
            except OSError:
                pass
        except PermissionError:
            continue


def _wait_for_master(worker: Any) -> None:
    """Print nothing; leave once the master has told this worker to stop (or after a while).

    gunicorn's signal handlers (SIGTERM, SIGINT, SIGQUIT) only mark the
    worker not alive; the master may have sent its SIGTERM while this worker
    was still loading, so the mark is what is watched, not the signal.
    """
    deadline = time.monotonic() + WAIT_FOR_MASTER
    while time.monotonic() < deadline:
        if not getattr(worker, "alive", True):
            raise SystemExit(0)
        time.sleep(0.05)
