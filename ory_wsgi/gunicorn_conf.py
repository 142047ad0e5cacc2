"""The shipped gunicorn settings, for a proxy that drains before it stops.

    gunicorn -c python:ory_wsgi.gunicorn_conf 'ory_wsgi:make_app("ory.toml")'

Threaded workers, timeouts that suit a proxy, settings judged once in the
master (a bad one: one line, exit code 4), and a graceful shutdown that
turns readiness 503 first. Command-line flags override any of these. The
environment may set `PORT` (default 4000), `WEB_CONCURRENCY` (workers,
default the number of CPUs) and `ORY_DRAIN_SECONDS` (how long a worker keeps
serving, with readiness 503, after SIGTERM before it stops accepting;
default 0). Not `ORY_WSGI_*`: those names are settings of the proxy itself.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType
from typing import Any

from ory_wsgi.readiness import begin_shutdown
from ory_wsgi.startup_check import check_in_master

DRAIN = int(os.environ.get("ORY_DRAIN_SECONDS", "0"))

bind = [f"0.0.0.0:{os.environ.get('PORT', '4000')}"]
workers = int(os.environ.get("WEB_CONCURRENCY", "0")) or os.cpu_count() or 1
# The proxy waits on the upstream and on Ory; threads let a worker hold many waits.
worker_class = "gthread"
threads = 32
# One accept queue per worker, so one worker cannot take every keep-alive connection.
reuse_port = True
# gthread's heartbeat comes from the main loop, not from requests: this is not a
# request limit (`[proxy] read_timeout` is), only how long a stuck worker lives.
timeout = 30
# In-flight requests and streams get this long to finish after SIGTERM.
graceful_timeout = 30 + DRAIN
# Longer than a load balancer's idle timeout (60 s on most), so it never sends a
# request on a connection this side is closing.
keepalive = 75
# `[proxy] trusted_proxies` is the one place that decides whose X-Forwarded-*
# is believed; gunicorn must not rewrite the scheme from them first.
forwarded_allow_ips = ""


def on_starting(server: Any) -> None:
    """Judge the settings once, here in the master: a bad one is one line and exit code 4.

    Then start Prometheus' multiprocess directory empty: old workers' files
    (and the check's own) would count again.
    """
    check_in_master(server)
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory and os.path.isdir(directory):
        for name in os.listdir(directory):
            if name.endswith(".db"):
                os.unlink(os.path.join(directory, name))


def post_worker_init(worker: Any) -> None:
    """Make SIGTERM turn readiness 503 at once, then stop accepting after `DRAIN` seconds."""
    stop = worker.handle_exit

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        begin_shutdown()
        if DRAIN > 0:
            timer = threading.Timer(DRAIN, stop, (signum, frame))
            timer.daemon = True
            timer.start()
        else:
            stop(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)


def worker_int(worker: Any) -> None:
    """SIGINT/SIGQUIT: a quick shutdown, still not ready from the first moment."""
    begin_shutdown()
