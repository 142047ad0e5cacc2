"""The ory-wsgi command, run as a user would: real processes on loopback ports."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from servers import ROOT, ThreadedServer, free_port, wait_for_port

from ory_wsgi.demo import DEMO_EMAIL, DEMO_PASSWORD

CLI = [sys.executable, "-m", "ory_wsgi.cli"]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
    )


class Background:
    def __init__(self, *args: str, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT, text=True
        )
        wait_for_port(port, process=self.process)

    def stop(self) -> str:
        self.process.terminate()
        output, _ = self.process.communicate(timeout=10)
        return output


@pytest.fixture
def dev_proxy(upstream: ThreadedServer) -> Iterator[Background]:
    port = free_port()
    server = Background("run", upstream.url, "--port", str(port), "--no-reload", port=port)
    yield server
    server.stop()


def test_run_proxies_to_the_upstream_on_the_dev_server(dev_proxy: Background) -> None:
    answer = requests.get(f"{dev_proxy.url}/some/path?q=1", timeout=5)
    assert answer.status_code == 200
    assert answer.json()["raw_uri"] == "/some/path?q=1"


def test_run_drops_client_authorization_on_the_dev_server(dev_proxy: Background) -> None:
    answer = requests.get(
        f"{dev_proxy.url}/x", headers={"Authorization": "Bearer forged"}, timeout=5
    )
    assert "Authorization" not in answer.json()["headers"]


def test_run_reports_a_bad_setting_in_one_line_and_exits_2() -> None:
    result = run_cli("run", "not a url", "--no-reload")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "[proxy] upstream" in lines[0]


def test_run_without_an_upstream_says_how_to_set_one() -> None:
    result = run_cli("run", "--no-reload", env={"ORY_WSGI_PROXY_UPSTREAM": ""})
    assert result.returncode == 2
    assert "upstream" in result.stderr and "\n" not in result.stderr.strip()


def run_cli_with_umask(umask: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        preexec_fn=lambda: os.umask(umask),
    )


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077])
def test_keys_generate_and_rotate_write_mode_0600_whatever_the_umask(
    tmp_path: Path, umask: int
) -> None:
    path = tmp_path / "keys.json"
    assert run_cli_with_umask(umask, "keys", "generate", str(path)).returncode == 0
    assert path.stat().st_mode & 0o777 == 0o600
    assert run_cli_with_umask(umask, "keys", "rotate", str(path)).returncode == 0
    assert path.stat().st_mode & 0o777 == 0o600


def test_keys_rotate_refuses_a_key_file_open_to_others_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    assert run_cli("keys", "generate", str(path)).returncode == 0
    path.chmod(0o644)
    result = run_cli("keys", "rotate", str(path))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"ory-wsgi: {path}: the key file holds a private key and is open to group or others "
        f"(mode 0644); run `chmod 600 {path}`"
    )


def test_check_config_prints_merged_settings_with_secrets_masked(tmp_path: Path) -> None:
    config = tmp_path / "ory.toml"
    config.write_text(
        '[proxy]\nupstream = "http://127.0.0.1:3000"\n[ory]\napi_key = "ory_pat_secret"\n'
    )
    result = run_cli("check-config", "-c", str(config), env={"ORY_WSGI_JWT_TTL": "30s"})
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["proxy"]["upstream"] == "http://127.0.0.1:3000"
    assert data["jwt"]["ttl"] == 30.0
    assert "ory_pat_secret" not in result.stdout


def test_check_config_names_file_key_and_typo(tmp_path: Path) -> None:
    config = tmp_path / "ory.toml"
    config.write_text('[proxy]\nupstreem = "http://127.0.0.1:3000"\n')
    result = run_cli("check-config", "-c", str(config))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"ory-wsgi: {config}: unknown key [proxy] upstreem (did you mean upstream?)"
    )


def test_help_lists_every_run_flag_of_the_spec() -> None:
    result = run_cli("run", "--help")
    assert result.returncode == 0
    for flag in (
        "--port",
        "--host",
        "--sdk-url",
        "--project",
        "--config",
        "--cookie-domain",
        "--no-jwt",
        "--protect-path-prefix",
        "--allowed-cors-origins",
        "--additional-cors-headers",
        "--default-redirect-url",
        "--rewrite-host",
        "--open",
        "--debug",
        "--quiet",
        "--reload",
    ):
        assert flag in result.stdout


def test_bin_ory_wsgi_runs_from_a_checkout() -> None:
    result = subprocess.run(
        [str(ROOT / "bin" / "ory-wsgi"), "--version"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ory-wsgi ")


def test_demo_shows_login_and_a_verified_jwt() -> None:
    port = free_port()
    demo = Background("demo", "--port", str(port), port=port)
    base = f"http://localhost:{port}"
    try:
        browser = requests.Session()
        home = browser.get(f"{base}/", timeout=10)
        assert "you are not logged in" in home.text
        gate = browser.get(
            f"{base}/members", headers={"Accept": "text/html"}, allow_redirects=False, timeout=10
        )
        assert gate.status_code == 303
        page = browser.get(gate.headers["Location"], timeout=10)
        action = re.search(r'<form[^>]*action="([^"]+)"', page.text)
        csrf = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page.text)
        assert action and csrf, page.text
        members = browser.post(
            action.group(1).replace("&amp;", "&"),
            data={
                "csrf_token": csrf.group(1),
                "identifier": DEMO_EMAIL,
                "password": DEMO_PASSWORD,
                "method": "password",
            },
            timeout=10,
        )
        assert members.url == f"{base}/members"
        assert f"Logged in as {DEMO_EMAIL}: the JWT verified" in members.text
    finally:
        demo.stop()
