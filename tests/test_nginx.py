"""nginx `auth_request` in front of the test app, asking the proxy's decisions endpoint.

Uses Debian's nginx (nginx-light has the auth_request module), started here on
loopback with the snippet of docs/deploy.md.
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

NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
if NGINX is None:
    if os.environ.get("CI"):
        raise RuntimeError("nginx is required in CI (.ci/run installs it)")
    pytest.skip(
        "nginx is not installed (apt-get install nginx-light); .ci/run installs it",
        allow_module_level=True,
    )

CONFIG = """
daemon off;
master_process off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream ory_wsgi {{ server 127.0.0.1:{proxy}; }}
    server {{
        listen 127.0.0.1:{port};

        location / {{
            auth_request /.ory-decision;
            auth_request_set $ory_authorization $upstream_http_authorization;
            auth_request_set $ory_subject $upstream_http_x_ory_subject;
            auth_request_set $ory_login $upstream_http_location;
            error_page 401 = @ory_login;
            proxy_set_header Authorization $ory_authorization;
            proxy_set_header X-Ory-Subject $ory_subject;
            proxy_pass http://127.0.0.1:{app};
        }}
        location = /.ory-decision {{
            internal;
            proxy_pass http://ory_wsgi/.ory/proxy/decisions;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Forwarded-Method $request_method;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
            proxy_set_header X-Forwarded-Uri $request_uri;
        }}
        location @ory_login {{
            if ($ory_login) {{ return 303 $ory_login; }}
            return 401;
        }}
        location /.ory/ {{
            proxy_pass http://ory_wsgi;
        }}
    }}
}}
"""


class Nginx:
    def __init__(self, tmp: Path, proxy_port: int, app_port: int, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        config = tmp / "nginx.conf"
        config.write_text(CONFIG.format(tmp=tmp, proxy=proxy_port, app=app_port, port=port))
        self.process = subprocess.Popen(
            [str(NGINX), "-p", str(tmp), "-c", str(config), "-e", str(tmp / "error.log")]
        )
        wait_for_port(port, process=self.process)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@pytest.fixture
def nginx(
    tmp_path: Path,
    start_proxy: Callable[..., Gunicorn],
    upstream: ThreadedServer,
    fake_ory: FakeKratos,
) -> Iterator[Nginx]:
    port = free_port()
    proxy = start_proxy(
        f'[proxy]\nupstream = "{upstream.url}"\npublic_url = "http://127.0.0.1:{port}"\n'
        'trusted_proxies = ["127.0.0.1/32"]\n'
        f'[ory]\nsdk_url = "{fake_ory.url}"\n[decisions]\nenabled = true\n'
        '[[protect]]\nprefix = "/members"\n'
    )
    server = Nginx(tmp_path, proxy.port, upstream.port, port)
    yield server
    server.stop()


def session_cookies(fake_ory: FakeKratos) -> tuple[str, dict[str, str]]:
    identity = fake_ory.add_identity("ada@example.com", PASSWORD)
    _, token = fake_ory.create_session(identity["id"])
    return str(identity["id"]), fake_ory.cookies(token)


def test_nginx_passes_a_logged_in_user_to_the_app_with_a_verified_jwt(
    nginx: Nginx, fake_ory: FakeKratos
) -> None:
    identity_id, cookies = session_cookies(fake_ory)
    seen = requests.get(f"{nginx.url}/members/page", cookies=cookies, timeout=5).json()["headers"]
    token = seen["Authorization"].removeprefix("Bearer ")
    published = requests.get(f"{nginx.url}/.ory/jwks.json", timeout=5).json()  # through nginx
    keys = KeySet.import_key_set(published)
    assert jwt.decode(token, keys, algorithms=["ES256"]).claims["sub"] == identity_id
    assert seen["X-Ory-Subject"] == identity_id


def test_nginx_sends_a_browser_without_session_to_the_login_page(nginx: Nginx) -> None:
    answer = requests.get(
        f"{nginx.url}/members/page?x=1",
        headers={"Accept": "text/html"},
        allow_redirects=False,
        timeout=5,
    )
    assert answer.status_code == 303
    location = urlsplit(answer.headers["Location"])
    assert location.path == "/.ory/self-service/login/browser"
    assert parse_qs(location.query)["return_to"] == [f"{nginx.url}/members/page?x=1"]


def test_nginx_refuses_an_api_client_without_session_with_401(nginx: Nginx) -> None:
    answer = requests.get(f"{nginx.url}/members/page", allow_redirects=False, timeout=5)
    assert answer.status_code == 401


def test_forged_authorization_and_subject_never_reach_the_app_behind_nginx(nginx: Nginx) -> None:
    forged = {"Authorization": "Bearer forged", "X-Ory-Subject": "someone-else"}
    answer = requests.get(f"{nginx.url}/open", headers=forged, timeout=5)
    assert answer.status_code == 200
    seen = answer.json()["headers"]
    assert "Authorization" not in seen and "X-Ory-Subject" not in seen


def test_nginx_refuses_with_403_when_ory_is_down(nginx: Nginx, fake_ory: FakeKratos) -> None:
    _, cookies = session_cookies(fake_ory)
    fake_ory.fail_whoami(500)
    answer = requests.get(f"{nginx.url}/members/page", cookies=cookies, timeout=5)
    assert answer.status_code == 403
