"""The JWT's `session` claim shows Ory's URLs as the browser sees them: under `/.ory`."""

from __future__ import annotations

import json
from pathlib import Path

import requests
from joserfc import jwt
from joserfc.jwk import KeySet as JoseKeySet
from ory_flows import Start, bearer_of, jwks, login

from ory_wsgi.keys import KeySet
from ory_wsgi.ory.rewrite import OryRewriter
from ory_wsgi.testing import FakeKratos
from ory_wsgi.tokens import TokenMinter


def test_jwt_session_matches_whoami_through_the_proxy(
    start_ory_proxy: Start, fake_ory: FakeKratos
) -> None:
    proxy = start_ory_proxy()
    browser = login(proxy, fake_ory)
    seen = browser.get(f"{proxy.url}/.ory/sessions/whoami", timeout=5).json()
    token = jwt.decode(bearer_of(browser.get(f"{proxy.url}/page", timeout=5)), jwks(proxy))
    claimed = token.claims["session"]
    assert claimed["identity"]["schema_url"] == seen["identity"]["schema_url"]
    assert claimed["identity"]["schema_url"].startswith(f"{proxy.url}/.ory/schemas/")
    assert claimed == seen
    assert requests.get(claimed["identity"]["schema_url"], timeout=5).json()["title"] == "Person"


def test_ory_urls_are_rewritten_like_the_body_of_an_ory_answer(tmp_path: Path) -> None:
    keys = KeySet.ensure("", str(tmp_path))
    minter = TokenMinter(
        keys,
        "https://app.example.com",
        rewriter=OryRewriter("http://kratos:4433", "https://app.example.com"),
    )
    session = {
        "id": "s1",
        "identity": {
            "id": "i1",
            "schema_url": "http://kratos:4433/schemas/ZGVmYXVsdA",
            "traits": {
                "website": "http://kratos:4433.evil.example/x",
                "links": ["http://kratos:44330/", "http://kratos:4433/ok"],
                "note": "see http://kratos:4433/schemas",
            },
        },
    }
    plain = {"id": "s2", "identity": {"id": "i2", "schema_url": "https://elsewhere/schemas/x"}}
    public_keys = JoseKeySet.import_key_set(json.loads(keys.jwks_document()))
    claims = jwt.decode(minter.mint(session), public_keys).claims["session"]
    identity = claims["identity"]
    assert identity["schema_url"] == "https://app.example.com/.ory/schemas/ZGVmYXVsdA"
    assert identity["traits"] == {
        "website": "http://kratos:4433.evil.example/x",
        "links": ["http://kratos:44330/", "https://app.example.com/.ory/ok"],
        "note": "see https://app.example.com/.ory/schemas",
    }
    assert session["identity"]["schema_url"] == "http://kratos:4433/schemas/ZGVmYXVsdA"
    assert jwt.decode(minter.mint(plain), public_keys).claims["session"] == plain
