"""Forward-auth for real: nginx and Caddy ask the decisions endpoint, the app gets the JWT."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from gateways import GATEWAYS, Gateway, find_binary
from joserfc import jwt
from joserfc.jwk import KeySet
from ory_flows import PASSWORD
from servers import Gunicorn, ThreadedServer, free_port

from ory_wsgi.testing import FakeKratos


@pytest.fixture(params=sorted(GATEWAYS))
def gateway(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    start_proxy: Callable[..., Gunicorn],
    upstream: ThreadedServer,
    fake_ory: FakeKratos,
) -> Iterator[Gateway]:
    kind = GATEWAYS[request.param]
    if find_binary(kind.binary_name) is None:
        if os.environ.get("CI"):
            raise RuntimeError(f"{kind.binary_name} is required in CI (.ci/run installs it)")
        pytest.skip(f"{kind.binary_name} is not installed (apt-get install {kind.package})")
    port = free_port()
    proxy = start_proxy(
        f'[proxy]\nupstream = "{upstream.url}"\npublic_url = "http://127.0.0.1:{port}"\n'
        'trusted_proxies = ["127.0.0.1/32"]\n'
        f'[ory]\nsdk_url = "{fake_ory.url}"\n[decisions]\nenabled = true\n'
        '[[protect]]\nprefix = "/members"\n'
    )
    server = kind(tmp_path, proxy.port, upstream.port, port)
    yield server
    server.stop()


def session_cookies(fake_ory: FakeKratos) -> tuple[str, dict[str, str]]:
    identity = fake_ory.add_identity("ada@example.com", PASSWORD)
    _, token = fake_ory.create_session(identity["id"])
    return str(identity["id"]), fake_ory.cookies(token)


def test_gateway_passes_a_logged_in_user_to_the_app_with_a_verified_jwt(
    gateway: Gateway, fake_ory: FakeKratos
) -> None:
    identity_id, cookies = session_cookies(fake_ory)
    seen = requests.get(f"{gateway.url}/members/page", cookies=cookies, timeout=5).json()["headers"]
    token = seen["Authorization"].removeprefix("Bearer ")
    published = requests.get(
        f"{gateway.url}/.ory/jwks.json", timeout=5
    ).json()  # through the gateway
    keys = KeySet.import_key_set(published)
    assert jwt.decode(token, keys, algorithms=["ES256"]).claims["sub"] == identity_id
    assert seen["X-Ory-Subject"] == identity_id


def test_gateway_sends_a_browser_without_session_to_the_login_page(gateway: Gateway) -> None:
    answer = requests.get(
        f"{gateway.url}/members/page?x=1",
        headers={"Accept": "text/html"},
        allow_redirects=False,
        timeout=5,
    )
    assert answer.status_code == 303
    location = urlsplit(answer.headers["Location"])
    assert location.path == "/.ory/self-service/login/browser"
    assert parse_qs(location.query)["return_to"] == [f"{gateway.url}/members/page?x=1"]


def test_gateway_refuses_an_api_client_without_session_with_401(gateway: Gateway) -> None:
    answer = requests.get(f"{gateway.url}/members/page", allow_redirects=False, timeout=5)
    assert answer.status_code == 401
    if gateway.relays_decision_answer:
        assert answer.json()["error"]["code"] == 401


def test_forged_authorization_and_subject_never_reach_the_app_behind_the_gateway(
    gateway: Gateway,
) -> None:
    forged = {"Authorization": "Bearer forged", "X-Ory-Subject": "someone-else"}
    answer = requests.get(f"{gateway.url}/open", headers=forged, timeout=5)
    assert answer.status_code == 200
    seen = answer.json()["headers"]
    assert "Authorization" not in seen and "X-Ory-Subject" not in seen


def test_gateway_refuses_with_403_when_ory_is_down(gateway: Gateway, fake_ory: FakeKratos) -> None:
    _, cookies = session_cookies(fake_ory)
    fake_ory.fail_whoami(500)
    answer = requests.get(f"{gateway.url}/members/page", cookies=cookies, timeout=5)
    assert answer.status_code == 403
    if gateway.relays_decision_answer:
        assert answer.headers["X-Ory-Error"] == "ory_unavailable"
