"""Readiness with access rules: 503 naming the cause until a valid rule set loads.

The proxy runs under gunicorn with a rule file that is broken from the
start, then fixed, then broken again, in both modes that serve traffic from
the rules: the proxy itself and the decisions endpoint.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import requests
from ory_flows import Start
from servers import free_port

from ory_wsgi.readiness import READY_PATH

ENABLED = """
[access_rules]
repositories = ["rules.json"]
[authenticators.anonymous]
enabled = true
[authorizers.allow]
enabled = true
[mutators.noop]
enabled = true
"""


def good_rules(public: str) -> str:
    rule = {
        "id": "open",
        "match": {"url": f"{public}/<.*>", "methods": ["GET"]},
        "authenticators": [{"handler": "anonymous"}],
        "authorizer": {"handler": "allow"},
        "mutators": [{"handler": "noop"}],
    }
    return json.dumps([rule])


def write(path: Path, text: str) -> None:
    """Write and move the mtime on, as a later edit would."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    later = max(path.stat().st_mtime_ns, before + 1_000_000)
    os.utime(path, ns=(later, later))


def ready(url: str) -> requests.Response:
    return requests.get(url + READY_PATH, timeout=5)


def wait_ready(url: str, timeout: float = 6.0) -> requests.Response:
    """Readiness once it is 200, or the last answer after `timeout` (the caller asserts)."""
    deadline = time.monotonic() + timeout
    answer = ready(url)
    while answer.status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
        answer = ready(url)
    return answer


@pytest.mark.parametrize("mode", ["proxy", "decisions"])
def test_not_ready_until_the_rules_load_then_the_last_good_set_keeps_it_ready(
    tmp_path: Path, start_ory_proxy: Start, mode: str
) -> None:
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    rules = tmp_path / "rules.json"
    write(rules, "[{")
    decisions = "[decisions]\nenabled = true\n" if mode == "decisions" else ""
    proxy = start_ory_proxy(ENABLED + decisions, port=port)
    page = f"{proxy.url}/.ory/proxy/decisions/page" if mode == "decisions" else proxy.url + "/page"

    answer = ready(proxy.url)
    assert answer.status_code == 503
    assert answer.json()["reason"] == "rules_not_loaded"
    assert "rules.json" in answer.json()["message"]
    assert "neither JSON nor valid YAML" in answer.json()["message"]
    refused = requests.get(page, timeout=5)
    assert refused.status_code == (403 if mode == "decisions" else 503)  # fails closed

    write(rules, good_rules(public))
    answer = wait_ready(proxy.url)
    assert (answer.status_code, answer.json()) == (200, {"status": "ok"})
    assert requests.get(page, timeout=5).status_code == 200

    write(rules, '[{"id": "half"')
    deadline = time.monotonic() + 6.0
    while "rules_error" not in ready(proxy.url).json() and time.monotonic() < deadline:
        time.sleep(0.1)
    answer = ready(proxy.url)
    assert answer.status_code == 200
    assert "rules.json" in answer.json()["rules_error"]
    assert requests.get(page, timeout=5).status_code == 200  # the last good set decides
    lines = [line for line in proxy.log().splitlines() if "the last good set stays" in line]
    assert len(lines) == 1, proxy.log()
