"""ory_wsgi.verify: the app-side check of the proxy's JWT, against a JWKS served over HTTP."""

from __future__ import annotations

import base64
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey
from pytest_httpserver import HTTPServer

from ory_wsgi import InvalidToken, verify
from ory_wsgi.keys import KeySet, generate_key_set_file, rotate_key_set_file
from ory_wsgi.tokens import TokenMinter
from ory_wsgi.verifier import JwksUnavailable, JwksVerifier

ISSUER = "https://app.example.com"
SESSION = {
    "id": "5f2c3a2e-0000-4000-8000-000000000001",
    "active": True,
    "expires_at": "2999-01-01T00:00:00Z",
    "authenticator_assurance_level": "aal1",
    "identity": {"id": "0b4a1d1e-0000-4000-8000-000000000002", "traits": {"email": "a@b.c"}},
}


@pytest.fixture
def keys(tmp_path: Path) -> KeySet:
    path = tmp_path / "jwks.json"
    generate_key_set_file(str(path))
    return KeySet.load(str(path), check_interval=0)


def serve_jwks(httpserver: HTTPServer, keys: KeySet, path: str = "/.ory/jwks.json") -> str:
    httpserver.expect_request(path).respond_with_data(
        keys.jwks_document(), content_type="application/json"
    )
    return httpserver.url_for(path)


def jwks_fetches(httpserver: HTTPServer) -> int:
    return sum(1 for request, _ in httpserver.log if request.path.endswith("jwks.json"))


def signed(keys: KeySet, claims: dict[str, Any], kid: str | None = None) -> str:
    header = {"alg": "ES256", "kid": kid or keys.signing_kid}
    return jwt.encode(header, claims, keys.signing_key)


def claims_now(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"iss": ISSUER, "sub": "s", "iat": now, "nbf": now, "exp": now + 60, **changes}
    return {k: v for k, v in claims.items() if v is not None}


def test_proxy_token_verifies_and_gives_the_session(httpserver: HTTPServer, keys: KeySet) -> None:
    url = serve_jwks(httpserver, keys)
    token = TokenMinter(keys, ISSUER).mint(SESSION)
    claims = JwksVerifier(url, issuer=ISSUER).verify(token)
    assert claims["sub"] == SESSION["identity"]["id"]  # type: ignore[index]
    assert claims["session"] == SESSION


def test_verify_function_accepts_a_bearer_header_value(
    httpserver: HTTPServer, keys: KeySet
) -> None:
    url = serve_jwks(httpserver, keys, f"/{uuid.uuid4()}/jwks.json")
    token = TokenMinter(keys, ISSUER).mint(SESSION)
    assert verify("Bearer " + token, jwks_url=url, issuer=ISSUER)["iss"] == ISSUER


def test_key_set_is_fetched_once_for_many_tokens(httpserver: HTTPServer, keys: KeySet) -> None:
    verifier = JwksVerifier(serve_jwks(httpserver, keys))
    for _ in range(5):
        verifier.verify(signed(keys, claims_now(jti=str(uuid.uuid4()))))
    assert jwks_fetches(httpserver) == 1


def test_tampered_token_is_refused(httpserver: HTTPServer, keys: KeySet) -> None:
    verifier = JwksVerifier(serve_jwks(httpserver, keys))
    header, _, signature = signed(keys, claims_now()).split(".")
    forged_payload = signed(keys, claims_now(sub="admin")).split(".")[1]
    with pytest.raises(InvalidToken):
        verifier.verify(f"{header}.{forged_payload}.{signature}")


def test_token_signed_by_another_key_with_the_same_kid_is_refused(
    httpserver: HTTPServer, keys: KeySet
) -> None:
    verifier = JwksVerifier(serve_jwks(httpserver, keys))
    other = ECKey.generate_key("P-256")
    token = jwt.encode({"alg": "ES256", "kid": keys.signing_kid}, claims_now(), other)
    with pytest.raises(InvalidToken):
        verifier.verify(token)


def test_symmetric_algorithm_is_refused(httpserver: HTTPServer, keys: KeySet) -> None:
    verifier = JwksVerifier(serve_jwks(httpserver, keys))
    token = jwt.encode(
        {"alg": "HS256", "kid": keys.signing_kid}, claims_now(), OctKey.generate_key(256)
    )
    with pytest.raises(InvalidToken):
        verifier.verify(token)


def test_expired_token_is_refused(httpserver: HTTPServer, keys: KeySet) -> None:
    verifier = JwksVerifier(serve_jwks(httpserver, keys), leeway=5)
    past = int(time.time()) - 120
    with pytest.raises(InvalidToken, match="expired"):
        verifier.verify(signed(keys, claims_now(iat=past, nbf=past, exp=past + 60)))


def test_token_not_yet_valid_is_refused(httpserver: HTTPServer, keys: KeySet) -> None:
    verifier = JwksVerifier(serve_jwks(httpserver, keys), leeway=5)
    later = int(time.time()) + 120
    with pytest.raises(InvalidToken):
        verifier.verify(signed(keys, claims_now(nbf=later, exp=later + 60)))


def test_token_without_exp_is_refused(httpserver: HTTPServer, keys: KeySet) -> None:
    verifier = JwksVerifier(serve_jwks(httpserver, keys))
    with pytest.raises(InvalidToken):
        verifier.verify(signed(keys, claims_now(exp=None)))


def test_wrong_issuer_is_refused(httpserver: HTTPServer, keys: KeySet) -> None:
    verifier = JwksVerifier(serve_jwks(httpserver, keys), issuer=ISSUER)
    with pytest.raises(InvalidToken):
        verifier.verify(signed(keys, claims_now(iss="https://evil.example")))


def test_audience_is_checked_when_given(httpserver: HTTPServer, keys: KeySet) -> None:
    verifier = JwksVerifier(serve_jwks(httpserver, keys), audience="billing")
    assert verifier.verify(signed(keys, claims_now(aud="billing")))["aud"] == "billing"
    with pytest.raises(InvalidToken):
        verifier.verify(signed(keys, claims_now(aud="reports")))
    with pytest.raises(InvalidToken):
        verifier.verify(signed(keys, claims_now()))


def test_rotated_key_is_fetched_on_its_first_unknown_kid(
    httpserver: HTTPServer, keys: KeySet
) -> None:
    url = serve_jwks(httpserver, keys)
    verifier = JwksVerifier(url, refetch_interval=0)
    verifier.verify(signed(keys, claims_now()))
    rotate_key_set_file(keys.path)
    keys.reload_if_changed()
    httpserver.clear()
    serve_jwks(httpserver, keys)
    assert verifier.verify(signed(keys, claims_now()))["sub"] == "s"
    assert jwks_fetches(httpserver) == 1


def test_unknown_kids_refetch_at_most_once_per_interval(
    httpserver: HTTPServer, keys: KeySet
) -> None:
    verifier = JwksVerifier(serve_jwks(httpserver, keys), refetch_interval=60)
    verifier.verify(signed(keys, claims_now()))
    for _ in range(3):
        with pytest.raises(InvalidToken, match="no key"):
            verifier.verify(signed(keys, claims_now(), kid=str(uuid.uuid4())))
    assert jwks_fetches(httpserver) == 1


def test_unreachable_jwks_is_reported(httpserver: HTTPServer, keys: KeySet) -> None:
    httpserver.expect_request("/.ory/jwks.json").respond_with_data("down", status=503)
    verifier = JwksVerifier(httpserver.url_for("/.ory/jwks.json"))
    with pytest.raises(JwksUnavailable, match="503"):
        verifier.verify(signed(keys, claims_now()))


def test_garbage_is_refused_without_fetching(httpserver: HTTPServer, keys: KeySet) -> None:
    verifier = JwksVerifier(serve_jwks(httpserver, keys))
    # Headers that are JSON but not an object, holding "alg" as joserfc asks: a string, a list.
    odd_headers = [
        base64.urlsafe_b64encode(h).rstrip(b"=").decode() + ".e30.c2ln"
        for h in (b'"alg"', b'["alg"]', b'["alg", "kid"]', b'"{\\"alg\\"}"')
    ]
    for token in ("", "abc", "a.b.c", "Zm9v.YmFy.YmF6", *odd_headers):
        with pytest.raises(InvalidToken):
            verifier.verify(token)
    assert jwks_fetches(httpserver) == 0
