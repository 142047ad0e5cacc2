"""The token issuer stand-in over HTTP: JWKS and discovery, tokens joserfc verifies, faults."""

from __future__ import annotations

import base64
import http.client
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from ory_wsgi.testing.issuer import FakeIssuer


def fetch(url: str, timeout: float = 5) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.mark.parametrize(
    "alg", ["RS256", "PS384", "ES256", "ES384", "ES512", "EdDSA", "HS256", "HS512"]
)
def test_minted_tokens_verify_against_the_published_jwks(fake_issuer: FakeIssuer, alg: str) -> None:
    token = fake_issuer.mint({"sub": "u", "aud": "api"}, alg=alg)
    status, document = fetch(fake_issuer.jwks_url)
    assert status == 200
    decoded = jwt.decode(token, KeySet.import_key_set(document), algorithms=[alg])
    claims = decoded.claims
    assert (claims["sub"], claims["aud"], claims["iss"]) == ("u", "api", fake_issuer.url)
    assert claims["exp"] - claims["iat"] == 300
    assert decoded.header["kid"] == fake_issuer.key(alg).kid
    assert fake_issuer.jwks_fetches == 1


def test_public_keys_only_except_the_oct_secrets(fake_issuer: FakeIssuer) -> None:
    fake_issuer.key("RS256")
    fake_issuer.key("ES256")
    fake_issuer.key("HS256")
    members = fetch(fake_issuer.jwks_url)[1]["keys"]
    by_type = {m["kty"]: m for m in members}
    assert "d" not in by_type["RSA"] and "d" not in by_type["EC"]
    assert "k" in by_type["oct"]
    assert all(m["use"] == "sig" and m["kid"] for m in members)


def test_discovery_names_the_issuer_and_its_jwks(fake_issuer: FakeIssuer) -> None:
    status, document = fetch(fake_issuer.url + "/.well-known/openid-configuration")
    assert status == 200
    assert document == {"issuer": fake_issuer.url, "jwks_uri": fake_issuer.jwks_url}
    assert fetch(fake_issuer.url + "/nothing")[0] == 404


def test_rotate_publishes_the_new_key_first_and_keeps_the_old(fake_issuer: FakeIssuer) -> None:
    old = str(fake_issuer.key("ES256").kid)
    new = fake_issuer.rotate("ES256")
    kids = [m["kid"] for m in fetch(fake_issuer.jwks_url)[1]["keys"]]
    assert kids == [new, old]
    token = fake_issuer.mint({"sub": "u"}, alg="ES256")
    assert (
        jwt.decode(token, KeySet.import_key_set(fake_issuer.jwks()), algorithms=["ES256"]).header[
            "kid"
        ]
        == new
    )
    fake_issuer.retire(old)
    assert [m["kid"] for m in fake_issuer.jwks()["keys"]] == [new]


def test_none_claims_are_left_out_and_headers_added(fake_issuer: FakeIssuer) -> None:
    token = fake_issuer.mint({"sub": "u", "exp": None}, header={"typ": "at+jwt"}, kid="other")
    header, payload, _ = token.split(".")
    claims = json.loads(_b64decode(payload))
    assert "exp" not in claims and claims["sub"] == "u"
    assert json.loads(_b64decode(header)) == {"alg": "RS256", "kid": "other", "typ": "at+jwt"}


def test_forge_assembles_whatever_it_is_given() -> None:
    token = FakeIssuer.forge({"alg": "none"}, {"sub": "admin"})
    header, payload, signature = token.split(".")
    assert json.loads(_b64decode(header)) == {"alg": "none"}
    assert json.loads(_b64decode(payload)) == {"sub": "admin"}
    assert signature == ""


def test_keys_in_files(fake_issuer: FakeIssuer, tmp_path: Path) -> None:
    token = fake_issuer.mint({"sub": "u"}, alg="ES384")
    public = json.loads(fake_issuer.write_jwks(tmp_path / "public.json").read_text())
    assert all("d" not in member for member in public["keys"])
    private = fake_issuer.write_private(tmp_path / "private.json")
    assert private.stat().st_mode & 0o077 == 0
    again = FakeIssuer(keys_file=private)
    assert again.key("ES384").kid == fake_issuer.key("ES384").kid
    copy = again.mint({"sub": "u"}, alg="ES384")
    keys = KeySet.import_key_set(public)
    subjects = {jwt.decode(t, keys, algorithms=["ES384"]).claims["sub"] for t in (copy, token)}
    assert subjects == {"u"}


def test_faults_500_slow_and_down(fake_issuer: FakeIssuer) -> None:
    fake_issuer.fail_jwks(503, retry_after="7")
    try:
        urllib.request.urlopen(fake_issuer.jwks_url, timeout=5)
        raise AssertionError("expected 503")
    except urllib.error.HTTPError as error:
        assert (error.code, error.headers["Retry-After"]) == (503, "7")
    fake_issuer.reset_faults()
    fake_issuer.delay = 0.3
    started = time.monotonic()
    assert fetch(fake_issuer.jwks_url)[0] == 200
    assert time.monotonic() - started >= 0.3
    fake_issuer.reset_faults()
    fake_issuer.down = True
    host, port = fake_issuer.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        connection.request("GET", "/.well-known/jwks.json")
        connection.getresponse()
    connection.close()
    assert fake_issuer.jwks_fetches == 2  # the dropped connection never reached the app
    fake_issuer.reset_faults()
    assert fetch(fake_issuer.jwks_url)[0] == 200


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
