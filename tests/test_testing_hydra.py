"""The Hydra stand-in over HTTP: RFC 7662 answers, client credentials, counters and faults."""

from __future__ import annotations

import time

import requests

from ory_wsgi.testing.hydra import FakeHydra, serve_hydra


def introspect(hydra: FakeHydra, token: str, **form: str) -> requests.Response:
    return requests.post(hydra.introspection_url, data={"token": token, **form}, timeout=5)


def test_an_issued_token_introspects_like_hydra(fake_hydra: FakeHydra) -> None:
    token = fake_hydra.issue(
        "ada", scope=["photos.read", "openid"], audience=["api"], ttl=60, ext={"tier": "gold"}
    )
    assert token.startswith("ory_at_")
    answer = introspect(fake_hydra, token).json()
    now = time.time()
    assert answer.pop("exp") - now > 55
    assert now - 5 < answer.pop("iat") == answer.pop("nbf") <= now
    assert answer == {
        "active": True,
        "sub": "ada",
        "client_id": "ory-wsgi-test",
        "scope": "photos.read openid",
        "aud": ["api"],
        "iss": fake_hydra.url + "/",
        "token_type": "Bearer",
        "token_use": "access_token",
        "ext": {"tier": "gold"},
    }
    assert fake_hydra.calls(token) == 1 and fake_hydra.introspection_calls == 1


def test_unknown_expired_revoked_and_unscoped_tokens_are_inactive(fake_hydra: FakeHydra) -> None:
    short = fake_hydra.issue("ada", ttl=1)
    revoked = fake_hydra.issue("ada")
    scoped = fake_hydra.issue("ada", scope=["photos.*"])
    fake_hydra.revoke(revoked)
    assert introspect(fake_hydra, scoped, scope="photos.read").json()["active"] is True
    assert introspect(fake_hydra, scoped, scope="videos.read").json() == {"active": False}
    assert introspect(fake_hydra, "ory_at_nobody.knows").json() == {"active": False}
    assert introspect(fake_hydra, revoked).json() == {"active": False}
    time.sleep(1.1)
    assert introspect(fake_hydra, short).json() == {"active": False}
    missing = requests.post(fake_hydra.introspection_url, data={}, timeout=5)
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_request"


def test_client_credentials_with_basic_auth_issue_an_introspectable_token(
    fake_hydra: FakeHydra,
) -> None:
    fake_hydra.add_client("gate", "s3cr:et", scope=["introspect"], audience=["hydra"], ttl=120)
    answer = requests.post(
        fake_hydra.token_url,
        data={"grant_type": "client_credentials", "scope": "introspect", "audience": "hydra"},
        auth=("gate", "s3cr%3Aet"),  # RFC 6749 §2.3.1: form-urlencoded before Basic
        timeout=5,
    )
    assert answer.status_code == 200
    body = answer.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 120
    introspected = introspect(fake_hydra, body["access_token"]).json()
    assert introspected["sub"] == "gate" and introspected["aud"] == ["hydra"]
    wrong = requests.post(
        fake_hydra.token_url,
        data={"grant_type": "client_credentials"},
        auth=("gate", "nope"),
        timeout=5,
    )
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    assert fake_hydra.token_calls == 2


def test_faults_crafted_answers_and_required_auth(fake_hydra: FakeHydra) -> None:
    token = fake_hydra.issue("ada")
    fake_hydra.fail_introspection(429, retry_after="7")
    limited = introspect(fake_hydra, token)
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "7"
    fake_hydra.fault = None
    fake_hydra.answer_with(token, {"active": "true", "sub": "root"})
    assert introspect(fake_hydra, token).json() == {"active": "true", "sub": "root"}
    fake_hydra.require_introspection_auth = True
    assert introspect(fake_hydra, token).status_code == 401
    assert fake_hydra.calls(token) == 3


def test_a_stopped_server_refuses_connections() -> None:
    server = serve_hydra()
    url = server.hydra.introspection_url
    assert requests.post(url, data={"token": "x"}, timeout=5).json() == {"active": False}
    server.stop()
    try:
        requests.post(url, data={"token": "x"}, timeout=5)
    except requests.ConnectionError:
        return
    raise AssertionError("a stopped stand-in answered")
