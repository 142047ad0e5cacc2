"""Caddy's `forward_auth` in front of the test app, asking the proxy's decisions endpoint.

Uses Debian's caddy, started here on loopback with the snippet of docs/deploy.md.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import KeySet
from ory_flows import PASSWORD
from servers import Gunicorn, ThreadedServer, free_port, wait_for_port

from ory_wsgi.testing import FakeKratos

CADDY = shutil.which("caddy")
if CADDY is None:
    if os.environ.get("CI"):
        raise RuntimeError("caddy is required in CI (.ci/run installs it)")
    pytest.skip(
        "caddy is not installed (apt-get install caddy); .ci/run installs it",
        allow_module_level=True,
    )

CADDYFILE = """
{{
    admin off
    auto_https off
}}
http://127.0.0.1:{port} {{
    handle /.ory/* {{
        reverse_proxy 127.0.0.1:{proxy}
    }}
    handle {{
        route {{
            # Never believed from a client: only the decision sets it.
            request_header -X-Ory-Subject
            # forward_auth spelled out: its copy_headers lets a client's own
            # header through when the decision has none (caddy < 2.9 even sends
            # the placeholder text).
            reverse_proxy 127.0.0.1:{proxy} {{
                method GET
                rewrite /.ory/proxy/decisions
                header_up X-Forwarded-Method {{method}}
                header_up X-Forwarded-Uri {{uri}}
                @session {{
                    status 2xx
                    header X-Ory-Subject *
                }}
                handle_response @session {{
                    request_header Authorization {{rp.header.Authorization}}
                    request_header X-Ory-Subject {{rp.header.X-Ory-Subject}}
                }}
                @anonymous status 2xx
                handle_response @anonymous {{
                    request_header -Authorization
                }}
                @login {{
                    status 401
                    header Location *
                }}
                handle_response @login {{
                    redir {{rp.header.Location}} 303
                }}
            }}
            reverse_proxy 127.0.0.1:{app}
        }}
    }}
}}
"""


class Caddy:
    def __init__(self, tmp: Path, proxy_port: int, app_port: int, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        config = tmp / "Caddyfile"
        config.write_text(CADDYFILE.format(proxy=proxy_port, app=app_port, port=port))
        home = {"HOME": str(tmp), "XDG_DATA_HOME": str(tmp), "XDG_CONFIG_HOME": str(tmp)}
        self.log = (tmp / "caddy.log").open("wb")
        self.process = subprocess.Popen(
            [str(CADDY), "run", "--config", str(config), "--adapter", "caddyfile"],
            env=home,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_for_port(port, process=self.process)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        self.log.close()


@pytest.fixture
def caddy(
    tmp_path: Path,
    start_proxy: Callable[..., Gunicorn],
    upstream: ThreadedServer,
    fake_ory: FakeKratos,
) -> Iterator[Caddy]:
    port = free_port()
    proxy = start_proxy(
        f'[proxy]\nupstream = "{upstream.url}"\npublic_url = "http://127.0.0.1:{port}"\n'
        'trusted_proxies = ["127.0.0.1/32"]\n'
        f'[ory]\nsdk_url = "{fake_ory.url}"\n[decisions]\nenabled = true\n'
        '[[protect]]\nprefix = "/members"\n'
    )
    server = Caddy(tmp_path, proxy.port, upstream.port, port)
    yield server
    server.stop()


def session_cookies(fake_ory: FakeKratos) -> tuple[str, dict[str, str]]:
    identity = fake_ory.add_identity("ada@example.com", PASSWORD)
    _, token = fake_ory.create_session(identity["id"])
    return str(identity["id"]), fake_ory.cookies(token)


def test_caddy_passes_a_logged_in_user_to_the_app_with_a_verified_jwt(
    caddy: Caddy, fake_ory: FakeKratos
) -> None:
    identity_id, cookies = session_cookies(fake_ory)
    seen = requests.get(f"{caddy.url}/members/page", cookies=cookies, timeout=5).json()["headers"]
    published = requests.get(f"{caddy.url}/.ory/jwks.json", timeout=5).json()  # through caddy
    token = seen["Authorization"].removeprefix("Bearer ")
    claims = jwt.decode(token, KeySet.import_key_set(published), algorithms=["ES256"]).claims
    assert claims["sub"] == identity_id
    assert seen["X-Ory-Subject"] == identity_id


def test_caddy_sends_a_browser_without_session_to_the_login_page(caddy: Caddy) -> None:
    answer = requests.get(
        f"{caddy.url}/members/page?x=1",
        headers={"Accept": "text/html"},
        allow_redirects=False,
        timeout=5,
    )
    assert answer.status_code == 303
    location = urlsplit(answer.headers["Location"])
    assert location.path == "/.ory/self-service/login/browser"
    assert parse_qs(location.query)["return_to"] == [f"{caddy.url}/members/page?x=1"]


def test_caddy_refuses_an_api_client_without_session_with_401(caddy: Caddy) -> None:
    answer = requests.get(f"{caddy.url}/members/page", allow_redirects=False, timeout=5)
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == 401


def test_forged_authorization_and_subject_never_reach_the_app_behind_caddy(caddy: Caddy) -> None:
    forged = {"Authorization": "Bearer forged", "X-Ory-Subject": "someone-else"}
    answer = requests.get(f"{caddy.url}/open", headers=forged, timeout=5)
    assert answer.status_code == 200
    seen = answer.json()["headers"]
    assert "Authorization" not in seen and "X-Ory-Subject" not in seen


def test_caddy_refuses_with_403_when_ory_is_down(caddy: Caddy, fake_ory: FakeKratos) -> None:
    _, cookies = session_cookies(fake_ory)
    fake_ory.fail_whoami(500)
    answer = requests.get(f"{caddy.url}/members/page", cookies=cookies, timeout=5)
    assert (answer.status_code, answer.headers["X-Ory-Error"]) == (403, "ory_unavailable")
