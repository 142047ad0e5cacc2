"""The `jwt` authenticator in-process, against the token issuer stand-in over HTTP.

Verification (algorithms, keys, claims, audience, scopes), where tokens come
from, the attacks of its class (alg none, algorithm confusion, foreign keys,
key-fetching headers, tampering, `crit`, oversized tokens) and the JWKS cache
(one fetch per worker and URL, rotation, refresh storms, stale keys, outages).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pipeline_app import client, registry, services
from test_rules_loader import doc_blocks
from werkzeug.test import Client

from ory_wsgi.pipeline.authenticators import AUTHENTICATORS
from ory_wsgi.pipeline.decision import Pipeline
from ory_wsgi.pipeline.registry import default_registry
from ory_wsgi.rules.loader import decode_document, parse_document
from ory_wsgi.rules.matcher import Matcher
from ory_wsgi.rules.model import AccessRule, Handler, Match, RuleSet
from ory_wsgi.testing.issuer import FakeIssuer, FakeIssuerServer, serve_issuer

ORY = "http://127.0.0.1:9"
ALL = ("GET", "HEAD", "POST")


def rule(config: dict[str, Any], *more: Handler, rule_id: str = "r", path: str = "") -> AccessRule:
    return AccessRule(
        id=rule_id,
        source="test",
        match=Match(ALL, f"<https?>://<[^/]+>/{path}<.*>"),
        authenticators=(Handler("jwt", config), *more),
        authorizer=Handler("allow"),
        mutators=(Handler("noop"),),
    )


def app_for(*rules: AccessRule) -> Client:
    matcher = Matcher(RuleSet(rules))
    return client(Pipeline(registry(services(ORY)), lambda: matcher, trusted=True))


def jwt_app(issuer: FakeIssuer, *more: Handler, **config: Any) -> Client:
    return app_for(rule({"jwks_urls": [issuer.jwks_url], **config}, *more))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture
def other_issuer() -> Iterator[FakeIssuer]:
    """A second issuer (another tenant, or the attacker's own) on its own port."""
    server: FakeIssuerServer = serve_issuer()
    yield server.issuer
    server.stop()


@pytest.mark.parametrize(
    "alg",
    ["RS256", "RS384", "RS512", "PS256", "PS512", "ES256", "ES384", "ES512", "EdDSA", "Ed25519"],
)
def test_a_valid_token_names_its_subject_by_every_default_algorithm(
    fake_issuer: FakeIssuer, alg: str
) -> None:
    app = jwt_app(fake_issuer, trusted_issuers=[fake_issuer.iss])
    answer = app.get("/x", headers=bearer(fake_issuer.mint({"sub": "user-1"}, alg=alg)))
    assert answer.status_code == 200, answer.get_data()
    assert answer.json is not None
    assert (answer.json["subject"], answer.json["authenticator"]) == ("user-1", "jwt")


def test_extra_is_the_claims_with_the_scopes_as_scp(fake_issuer: FakeIssuer) -> None:
    seen: dict[str, Any] = {}

    class Capture:
        name = "capture"

        def __init__(self, services: Any) -> None:
            del services

        def prepare(self, config: Any, where: str) -> None:
            return None

        def mutate(self, request: Any, session: Any, prepared: Any) -> None:
            seen.update(session.extra)

    matcher = Matcher(
        RuleSet(
            (
                AccessRule(
                    id="r",
                    source="test",
                    match=Match(ALL, "<https?>://<[^/]+>/<.*>"),
                    authenticators=(Handler("jwt", {"jwks_urls": [fake_issuer.jwks_url]}),),
                    authorizer=Handler("allow"),
                    mutators=(Handler("capture"),),
                ),
            )
        )
    )
    reg = default_registry(services(ORY), extra={"mutators": {"capture": Capture}})
    app = client(Pipeline(reg, lambda: matcher, trusted=True))
    token = fake_issuer.mint({"sub": "u", "scope": "orders.read orders.write", "tenant": "t1"})
    assert app.get("/x", headers=bearer(token)).status_code == 200
    assert seen["scp"] == ["orders.read", "orders.write"]
    assert "scope" not in seen
    assert (seen["sub"], seen["tenant"], seen["iss"]) == ("u", "t1", fake_issuer.iss)


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer ory_at_opaque-token.signature",  # Hydra's opaque access token
        "Bearer ory_st_session-token",
        "Bearer a.b.c.d.e",  # five parts: a JWE, not a JWS
        "Bearer not a jwt",
        "Bearer a.b.c!",
        "Basic dXNlcjpwYXNz",
        "",
    ],
)
def test_a_token_that_is_not_a_jws_leaves_it_to_the_next_authenticator(
    fake_issuer: FakeIssuer, authorization: str
) -> None:
    app = jwt_app(fake_issuer, Handler("noop"))
    answer = app.get("/x", headers={"Authorization": authorization} if authorization else {})
    assert answer.status_code == 200
    assert answer.json is not None and answer.json["authenticator"] == "noop"
    assert fake_issuer.jwks_fetches == 0


@pytest.mark.parametrize(
    ("token_from", "where"),
    [
        ({"header": "X-Api-Token"}, "header"),
        ({"query_parameter": "access_token"}, "query"),
        ({"cookie": "jwt"}, "cookie"),
    ],
)
def test_token_from_reads_the_named_place_only(
    fake_issuer: FakeIssuer, token_from: dict[str, str], where: str
) -> None:
    token = fake_issuer.mint({"sub": "u"})
    app = jwt_app(fake_issuer, Handler("noop"), token_from=token_from)
    path, headers = "/x", {}
    if where == "header":
        headers = {"X-Api-Token": token}
    elif where == "query":
        path = f"/x?access_token={token}"
    else:
        headers = {"Cookie": f"jwt={token}"}
    answer = app.get(path, headers=headers)
    assert answer.json is not None and answer.json["authenticator"] == "jwt"
    # Authorization: Bearer is not where this rule looks.
    answer = app.get("/x", headers=bearer(token))
    assert answer.json is not None and answer.json["authenticator"] == "noop"


def refused(answer: Any, status: int = 401) -> bool:
    return bool(answer.status_code == status and answer.headers.get("X-Rule") == "r")


# --- attacks ---------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
@pytest.mark.parametrize("signature", [b"", b"anything"])
def test_alg_none_is_refused_in_any_casing(
    fake_issuer: FakeIssuer, alg: str, signature: bytes
) -> None:
    kid = str(fake_issuer.key("RS256").kid)
    app = jwt_app(fake_issuer)
    token = fake_issuer.forge(
        {"alg": alg, "kid": kid}, {"sub": "admin", "exp": int(time.time()) + 60}, signature
    )
    assert refused(app.get("/x", headers=bearer(token)))


def test_none_listed_in_allowed_algorithms_is_a_load_error_never_an_unsigned_token(
    fake_issuer: FakeIssuer,
) -> None:
    for listed in (["none"], ["RS256", "None"]):
        app = jwt_app(fake_issuer, allowed_algorithms=listed)
        token = fake_issuer.forge({"alg": "none", "kid": "k"}, {"sub": "admin", "exp": 2**40})
        answer = app.get("/x", headers=bearer(token))
        assert answer.status_code == 500  # the rule is invalid: closed
        handler = AUTHENTICATORS["jwt"](services(ORY))
        with pytest.raises(Exception, match="never allowed"):
            handler.prepare(
                {"jwks_urls": [fake_issuer.jwks_url], "allowed_algorithms": listed}, "r"
            )


def hs256(secret: bytes, header: dict[str, Any], claims: dict[str, Any]) -> str:
    # Hand-made on purpose: joserfc itself refuses a public key as an HMAC secret.
    signing_input = FakeIssuer.forge(header, claims).rstrip(".")
    digest = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(digest)}"


@pytest.mark.parametrize("allowed", [None, ["RS256", "HS256"]])
def test_hs256_signed_with_the_rsa_public_key_is_refused(
    fake_issuer: FakeIssuer, allowed: list[str] | None
) -> None:
    rsa = fake_issuer.key("RS256")
    public = rsa.as_dict(private=False)
    secrets = [
        rsa.as_pem(private=False),
        json.dumps(public).encode(),
        json.dumps(fake_issuer.jwks()).encode(),
        base64.urlsafe_b64decode(public["n"] + "=="),
        str(public["n"]).encode(),
    ]
    config: dict[str, Any] = {} if allowed is None else {"allowed_algorithms": allowed}
    app = jwt_app(fake_issuer, **config)
    assert app.get("/x", headers=bearer(fake_issuer.mint({"sub": "u"}))).status_code == 200
    claims = {"sub": "admin", "iss": fake_issuer.iss, "exp": int(time.time()) + 60}
    for secret in secrets:
        token = hs256(secret, {"alg": "HS256", "kid": str(rsa.kid), "typ": "JWT"}, claims)
        assert refused(app.get("/x", headers=bearer(token)))


def test_hs256_is_accepted_only_when_listed_and_only_with_an_oct_key(
    fake_issuer: FakeIssuer, tmp_path: Path
) -> None:
    token = fake_issuer.mint({"sub": "u"}, alg="HS256")
    jwks = fake_issuer.write_jwks(tmp_path / "jwks.json")
    url = f"file://{jwks}"
    assert refused(app_for(rule({"jwks_urls": [url]})).get("/x", headers=bearer(token)))
    listed = app_for(rule({"jwks_urls": [url], "allowed_algorithms": ["HS256"]}))
    assert listed.get("/x", headers=bearer(token)).status_code == 200
    # An RS256 token is not accepted by a rule that lists HS256 only.
    rs = fake_issuer.mint({"sub": "u"}, alg="RS256")
    fake_issuer.write_jwks(jwks)
    listed = app_for(rule({"jwks_urls": [url], "allowed_algorithms": ["HS256"]}))
    assert refused(listed.get("/x", headers=bearer(rs)))


def test_a_kid_of_another_issuer_is_never_used(
    fake_issuer: FakeIssuer, other_issuer: FakeIssuer
) -> None:
    mine = rule({"jwks_urls": [fake_issuer.jwks_url], "trusted_issuers": [fake_issuer.iss]})
    theirs = rule({"jwks_urls": [other_issuer.jwks_url]}, rule_id="other", path="other/")
    app = app_for(mine, theirs)
    assert app.get("/x", headers=bearer(fake_issuer.mint({"sub": "u"}))).status_code == 200
    # The other rule loads the other issuer's keys into this worker...
    foreign = other_issuer.mint({"sub": "admin", "iss": fake_issuer.iss})
    assert app.get("/other/x", headers=bearer(foreign)).status_code == 200
    # ...which this rule never looks at, whatever the token claims.
    assert refused(app.get("/x", headers=bearer(foreign)))
    # Signed with the other issuer's key under this issuer's kid: the signature fails.
    my_kid = str(fake_issuer.key("RS256").kid)
    borrowed = other_issuer.mint({"sub": "admin", "iss": fake_issuer.iss}, kid=my_kid)
    assert refused(app.get("/x", headers=bearer(borrowed)))
    # The same key type from the other issuer, with a kid this issuer does not have.
    ec = other_issuer.mint({"sub": "admin", "iss": fake_issuer.iss}, alg="ES256")
    assert refused(app.get("/x", headers=bearer(ec)))


@pytest.mark.parametrize("member", ["jku", "x5u", "jwk", "x5c", "all"])
def test_key_carrying_headers_are_ignored_and_never_fetched(
    fake_issuer: FakeIssuer, other_issuer: FakeIssuer, member: str
) -> None:
    attacker = other_issuer.key("ES256")
    public = attacker.as_dict(private=False)
    members: dict[str, Any] = {
        "jku": other_issuer.jwks_url,
        "x5u": other_issuer.jwks_url,
        "jwk": public,
        "x5c": ["MIIBAA=="],
    }
    header = members if member == "all" else {member: members[member]}
    app = jwt_app(fake_issuer, trusted_issuers=[fake_issuer.iss])
    claims = {"sub": "admin", "iss": fake_issuer.iss}
    for kid in (str(attacker.kid), str(fake_issuer.key("ES256").kid)):
        token = other_issuer.mint(claims, alg="ES256", kid=kid, header=header)
        assert refused(app.get("/x", headers=bearer(token)))
    assert other_issuer.jwks_fetches == 0


@pytest.mark.parametrize(
    ("claims", "accepted"),
    [
        ({"exp": -3600}, False),  # expired an hour ago
        ({"exp": -30}, False),  # past the leeway
        ({"exp": -3}, True),  # within the 10 s leeway
        ({"nbf": 3600}, False),  # not yet valid
        ({"nbf": 3}, True),
        ({"iat": 3600}, False),  # issued in the future
        ({"exp": None}, False),  # no exp: refused (docs/rules-handlers.md)
        ({"exp": "soon"}, False),
        ({"exp": float("inf")}, False),
        ({"sub": None}, False),
        ({"sub": ""}, False),
        ({"sub": 42}, False),
    ],
)
def test_time_and_subject_claims(
    fake_issuer: FakeIssuer, claims: dict[str, Any], accepted: bool
) -> None:
    now = int(time.time())
    full: dict[str, Any] = {"sub": "u"}
    for name, value in claims.items():
        shift = name in ("exp", "nbf", "iat") and isinstance(value, int)
        full[name] = now + value if shift else value
    app = jwt_app(fake_issuer)
    answer = app.get("/x", headers=bearer(fake_issuer.mint(full)))
    assert answer.status_code == (200 if accepted else 401), answer.get_data()


@pytest.mark.parametrize(
    ("iss", "accepted"),
    [("issuer-a", True), ("issuer-b", True), ("issuer-c", False), (None, False), ("", False)],
)
def test_trusted_issuers(fake_issuer: FakeIssuer, iss: str | None, accepted: bool) -> None:
    app = jwt_app(fake_issuer, trusted_issuers=["issuer-a", "issuer-b"])
    answer = app.get("/x", headers=bearer(fake_issuer.mint({"sub": "u", "iss": iss})))
    assert answer.status_code == (200 if accepted else 401)


@pytest.mark.parametrize(
    ("target", "aud", "accepted"),
    [
        (["api"], "api", True),
        (["api"], ["api"], True),
        (["api"], ["other", "api"], True),
        (["api"], "other", False),
        (["api"], ["other"], False),
        (["api"], "apix", False),
        (["api"], None, False),
        (["api"], [], False),
        (["api"], {"api": True}, False),
        (["api", "b"], ["api"], False),  # every target audience must be held (Oathkeeper)
        (["api", "b"], ["b", "api"], True),
        ([], "anything", True),
    ],
)
def test_target_audience(
    fake_issuer: FakeIssuer, target: list[str], aud: Any, accepted: bool
) -> None:
    app = jwt_app(fake_issuer, target_audience=target)
    answer = app.get("/x", headers=bearer(fake_issuer.mint({"sub": "u", "aud": aud})))
    assert answer.status_code == (200 if accepted else 401)


def test_a_tampered_token_is_refused(fake_issuer: FakeIssuer) -> None:
    app = jwt_app(fake_issuer)
    token = fake_issuer.mint({"sub": "user", "role": "reader"})
    assert app.get("/x", headers=bearer(token)).status_code == 200
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    forged_header = json.loads(base64.urlsafe_b64decode(header + "=="))
    tampered = [
        f"{header}.{b64(json.dumps({**claims, 'sub': 'admin'}).encode())}.{signature}",
        f"{header}.{b64(json.dumps({**claims, 'role': 'admin'}).encode())}.{signature}",
        f"{b64(json.dumps({**forged_header, 'alg': 'RS512'}).encode())}.{payload}.{signature}",
        f"{header}.{payload}.{signature[:-4]}AAAA",
        f"{header}.{payload}.",
        f"{header}.{payload}.{signature}{signature}",
    ]
    for token in tampered:
        assert refused(app.get("/x", headers=bearer(token))), token


@pytest.mark.parametrize(
    "header",
    [
        {"crit": ["exp"]},
        {"crit": ["x-ours"], "x-ours": True},
        {"crit": []},
        {"b64": False, "crit": ["b64"]},
        {"b64": True},
    ],
)
def test_critical_header_extensions_are_refused(
    fake_issuer: FakeIssuer, header: dict[str, Any]
) -> None:
    app = jwt_app(fake_issuer)
    key = fake_issuer.key("ES256")
    token = fake_issuer.forge(
        {"alg": "ES256", "kid": str(key.kid), **header}, {"sub": "u", "exp": 2**33}, b"x" * 64
    )
    assert refused(app.get("/x", headers=bearer(token)))


@pytest.mark.parametrize(
    "header",
    [b'"alg"', b'["alg", "kid"]', b'{"alg": ["ES256"]}', b'{"alg": "ES256", "kid": {}}', b"{}"],
)
def test_a_header_that_is_not_an_object_of_strings_is_refused(
    fake_issuer: FakeIssuer, header: bytes
) -> None:
    app = jwt_app(fake_issuer, Handler("noop"))
    payload = json.dumps({"sub": "admin", "exp": 2**33}).encode()
    token = f"{b64(header)}.{b64(payload)}.{b64(b'x' * 64)}"
    assert refused(app.get("/x", headers=bearer(token)))


def test_an_oversized_token_is_refused_before_it_is_parsed(
    fake_issuer: FakeIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    app = jwt_app(fake_issuer, token_from={"query_parameter": "t"})
    fake_issuer.key("RS256")
    big = fake_issuer.mint({"sub": "u", "padding": "x" * 20000})
    with caplog.at_level(logging.WARNING, "ory_wsgi.pipeline"):
        answer = app.get(f"/x?t={big}")
    assert refused(answer)
    assert fake_issuer.jwks_fetches == 0  # refused before any key was looked for
    assert "longer than" in caplog.text
    # A valid token of ordinary size passes the same rule.
    assert app.get(f"/x?t={fake_issuer.mint({'sub': 'u'})}").status_code == 200


def test_a_refusal_logs_one_line_with_the_reason_never_the_token(
    fake_issuer: FakeIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    app = jwt_app(fake_issuer, trusted_issuers=["someone-else"])
    token = fake_issuer.mint({"sub": "u"})
    with caplog.at_level(logging.INFO, "ory_wsgi"):
        answer = app.get("/x", headers=bearer(token))
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert token not in answer.get_data(as_text=True)
    lines = [r.getMessage() for r in caplog.records if "jwt refused" in r.getMessage()]
    assert len(lines) == 1 and "iss" in lines[0]
    assert all(token.split(".")[2] not in r.getMessage() for r in caplog.records)


# --- scopes ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "granted", "status"),
    [
        ("exact", {"scp": ["orders.read", "x"]}, 200),
        ("exact", {"scope": "x orders.read"}, 200),
        ("exact", {"scopes": ["orders.read"]}, 200),
        ("exact", {"scope": "orders"}, 403),
        ("exact", {}, 403),
        ("hierarchic", {"scope": "orders"}, 200),
        ("hierarchic", {"scope": "orders.write"}, 403),
        ("wildcard", {"scp": ["orders.*"]}, 200),
    ],
)
def test_required_scope_is_403_when_missing(
    fake_issuer: FakeIssuer, strategy: str, granted: dict[str, Any], status: int
) -> None:
    app = jwt_app(fake_issuer, required_scope=["orders.read"], scope_strategy=strategy)
    answer = app.get("/x", headers=bearer(fake_issuer.mint({"sub": "u", **granted})))
    assert answer.status_code == status
    if status == 403:
        assert answer.headers["WWW-Authenticate"] == 'Bearer error="insufficient_scope"'


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({}, "jwks_urls must list"),
        ({"jwks_urls": ["ftp://keys/jwks.json"]}, "not an http"),
        ({"jwks_urls": "http://one"}, "list of strings"),
        ({"allowed_algorithms": ["RS265"]}, "unknown 'RS265'"),
        ({"allowed_algorithms": []}, "cannot be empty"),
        ({"allowed_algorithms": ["NONE"]}, "never allowed"),
        ({"required_scope": ["a"]}, "needs a scope_strategy"),
        ({"required_scope": ["a"], "scope_strategy": "none"}, "needs a scope_strategy"),
        ({"scope_strategy": "fuzzy"}, "scope_strategy must be"),
        ({"token_from": {"header": ""}}, "non-empty"),
        ({"jwks_ttl": "soon"}, "jwks_ttl"),
        ({"jwks_max_wait": 0}, "jwks_max_wait must be"),
        ({"trusted_issuer": ["x"]}, 'did you mean "trusted_issuers"'),
    ],
)
def test_config_is_checked_at_load(config: dict[str, Any], message: str) -> None:
    base = {"jwks_urls": ["http://127.0.0.1:9/jwks.json"]}
    handler = AUTHENTICATORS["jwt"](services(ORY))
    with pytest.raises(Exception, match=message):
        handler.prepare({**base, **config} if config else {}, 'rule "r" authenticator "jwt"')


# --- the key cache ---------------------------------------------------------------------


def test_keys_are_fetched_once_and_shared_by_rules_naming_the_same_url(
    fake_issuer: FakeIssuer,
) -> None:
    url = fake_issuer.jwks_url
    app = app_for(
        rule({"jwks_urls": [url]}),
        rule({"jwks_urls": [url], "target_audience": ["b"]}, rule_id="b", path="b/"),
    )
    for path, aud in (("/x", "a"), ("/b/x", "b")) * 10:
        token = fake_issuer.mint({"sub": "u", "aud": aud})
        assert app.get(path, headers=bearer(token)).status_code == 200
    assert fake_issuer.jwks_fetches == 1


def test_a_rotated_key_is_picked_up_by_one_refresh(fake_issuer: FakeIssuer) -> None:
    app = jwt_app(fake_issuer, jwks_min_refresh_interval="0.3s")
    old = fake_issuer.mint({"sub": "u"})
    assert app.get("/x", headers=bearer(old)).status_code == 200
    fake_issuer.rotate("RS256")
    new = fake_issuer.mint({"sub": "u"})
    time.sleep(0.35)
    for _ in range(5):
        assert app.get("/x", headers=bearer(new)).status_code == 200
        assert app.get("/x", headers=bearer(old)).status_code == 200  # still published
    assert fake_issuer.jwks_fetches == 2


def test_a_rotation_within_the_refresh_interval_waits_for_it(fake_issuer: FakeIssuer) -> None:
    old = fake_issuer.mint({"sub": "u"})
    app = jwt_app(fake_issuer, jwks_min_refresh_interval="2s")
    assert app.get("/x", headers=bearer(old)).status_code == 200
    fake_issuer.rotate("RS256")
    new = fake_issuer.mint({"sub": "u"})
    assert app.get("/x", headers=bearer(new)).status_code == 401
    time.sleep(2.05)
    assert app.get("/x", headers=bearer(new)).status_code == 200
    assert fake_issuer.jwks_fetches == 2


def test_a_storm_of_unknown_kids_costs_one_fetch_per_interval(fake_issuer: FakeIssuer) -> None:
    interval = 2.0
    app = jwt_app(fake_issuer, jwks_min_refresh_interval=interval)
    assert app.get("/x", headers=bearer(fake_issuer.mint({"sub": "u"}))).status_code == 200
    tokens = [fake_issuer.mint({"sub": "u"}, kid=f"made-up-{n}") for n in range(100)]
    time.sleep(interval + 0.05)
    statuses: list[int] = []

    def attack(start: int) -> None:
        for token in tokens[start : start + 10]:
            statuses.append(app.get("/x", headers=bearer(token)).status_code)

    threads = [threading.Thread(target=attack, args=(n * 10,)) for n in range(10)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    assert statuses == [401] * 100
    # The first load, then one refresh per interval the storm lasted (one, on an idle machine).
    assert 2 <= fake_issuer.jwks_fetches <= 2 + int(elapsed / interval)


def test_keys_are_refreshed_every_ttl(fake_issuer: FakeIssuer) -> None:
    app = jwt_app(fake_issuer, jwks_ttl="0.5s", jwks_min_refresh_interval="0.1s")
    token = fake_issuer.mint({"sub": "u"})
    assert app.get("/x", headers=bearer(token)).status_code == 200
    assert app.get("/x", headers=bearer(token)).status_code == 200
    assert fake_issuer.jwks_fetches == 1
    time.sleep(0.55)
    assert app.get("/x", headers=bearer(token)).status_code == 200
    assert fake_issuer.jwks_fetches == 2


def test_a_retired_key_stops_verifying_after_the_next_refresh(fake_issuer: FakeIssuer) -> None:
    app = jwt_app(fake_issuer, jwks_ttl="0.2s", jwks_min_refresh_interval="0.1s")
    token = fake_issuer.mint({"sub": "u"})
    assert app.get("/x", headers=bearer(token)).status_code == 200
    fake_issuer.retire(str(fake_issuer.key("RS256").kid))
    time.sleep(0.25)
    assert app.get("/x", headers=bearer(token)).status_code == 401


@pytest.mark.parametrize("fault", ["down", "500", "slow", "not_json"])
def test_stale_keys_are_served_while_the_jwks_endpoint_fails(
    fake_issuer: FakeIssuer, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = jwt_app(
        fake_issuer, jwks_ttl="0.1s", jwks_max_wait="0.2s", jwks_min_refresh_interval="0.1s"
    )
    token = fake_issuer.mint({"sub": "u"})
    assert app.get("/x", headers=bearer(token)).status_code == 200
    inject(fake_issuer, fault)
    time.sleep(0.15)
    with caplog.at_level(logging.WARNING, "ory_wsgi.pipeline"):
        assert app.get("/x", headers=bearer(token)).status_code == 200
    assert fake_issuer.jwks_fetches >= 1
    assert "could not be refreshed" in caplog.text
    # An unknown kid while the endpoint fails is a refusal, not an outage.
    unknown = fake_issuer.mint({"sub": "u"}, kid="unknown")
    assert app.get("/x", headers=bearer(unknown)).status_code == 401


def inject(issuer: FakeIssuer, fault: str) -> None:
    if fault == "down":
        issuer.down = True
    elif fault == "500":
        issuer.fail_jwks(500)
    elif fault == "slow":
        issuer.delay = 1.0
    else:
        issuer.fail_jwks(200)


@pytest.mark.parametrize("fault", ["down", "500", "slow", "not_json"])
def test_no_keys_at_first_use_is_503_and_the_outage_is_not_hammered(
    fake_issuer: FakeIssuer, fault: str
) -> None:
    app = jwt_app(fake_issuer, jwks_max_wait="0.2s", jwks_min_refresh_interval="0.5s")
    token = fake_issuer.mint({"sub": "u"})
    inject(fake_issuer, fault)
    first = app.get("/x", headers=bearer(token))
    assert first.status_code == 503
    assert first.headers["Retry-After"] == "5"
    fetches = fake_issuer.jwks_fetches
    for _ in range(5):
        assert app.get("/x", headers=bearer(token)).status_code == 503
    assert fake_issuer.jwks_fetches == fetches
    fake_issuer.reset_faults()
    time.sleep(0.55)
    assert app.get("/x", headers=bearer(token)).status_code == 200


def test_one_url_down_does_not_block_a_key_found_in_another(
    fake_issuer: FakeIssuer, other_issuer: FakeIssuer
) -> None:
    other_issuer.down = True
    app = app_for(
        rule({"jwks_urls": [other_issuer.jwks_url, fake_issuer.jwks_url], "jwks_max_wait": 0.2})
    )
    assert app.get("/x", headers=bearer(fake_issuer.mint({"sub": "u"}))).status_code == 200
    # A kid found nowhere while one source has never loaded: that source may hold it.
    unknown = fake_issuer.mint({"sub": "u"}, kid="elsewhere")
    assert app.get("/x", headers=bearer(unknown)).status_code == 503


def test_concurrent_first_requests_share_one_fetch(fake_issuer: FakeIssuer) -> None:
    fake_issuer.delay = 0.3
    app = jwt_app(fake_issuer)
    token = fake_issuer.mint({"sub": "u"})
    statuses: list[int] = []
    threads = [
        threading.Thread(
            target=lambda: statuses.append(app.get("/x", headers=bearer(token)).status_code)
        )
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 8
    assert fake_issuer.jwks_fetches == 1


def test_a_file_jwks_is_read_and_reread(fake_issuer: FakeIssuer, tmp_path: Path) -> None:
    token = fake_issuer.mint({"sub": "u"}, alg="ES256")
    path = fake_issuer.write_jwks(tmp_path / "keys.json")
    app = app_for(rule({"jwks_urls": [f"file://{path}"], "jwks_min_refresh_interval": "0.1s"}))
    assert app.get("/x", headers=bearer(token)).status_code == 200
    fake_issuer.rotate("ES256")
    rotated = fake_issuer.mint({"sub": "u"}, alg="ES256")
    fake_issuer.write_jwks(path)
    time.sleep(0.15)
    assert app.get("/x", headers=bearer(rotated)).status_code == 200
    assert fake_issuer.jwks_fetches == 0


# --- the example of docs/rules-handlers.md ----------------------------------------------


def doc_example(issuer: FakeIssuer) -> list[AccessRule]:
    """The jwt rule file of docs/rules-handlers.md, pointed at the stand-in."""
    (block,) = [b for b in doc_blocks("yaml", "rules-handlers.md") if "handler: jwt" in b]
    block = block.replace("https://login.example.com/.well-known/jwks.json", issuer.jwks_url)
    block = block.replace("https://login.example.com/", issuer.iss)
    return list(parse_document(decode_document(block.encode(), "doc"), "doc", "."))


def test_the_jwt_example_in_the_docs(fake_issuer: FakeIssuer) -> None:
    (example,) = doc_example(fake_issuer)
    assert example.id == "api-orders"
    app = app_for(example)
    url, site = "/orders/42", {"base_url": "https://api.example.com"}
    good = {"sub": "client-7", "aud": ["orders-api"], "scope": "orders.read orders.write"}
    answer = app.get(url, **site, headers=bearer(fake_issuer.mint(good, alg="ES256")))
    assert answer.status_code == 200, answer.get_data()
    assert answer.json is not None
    assert answer.json["headers"]["X-User-Id"] == "client-7"
    assert "orders.read" in answer.json["headers"]["X-Client-Scopes"]
    no_scope = {**good, "scope": "orders.write"}
    assert (
        app.get(url, **site, headers=bearer(fake_issuer.mint(no_scope, alg="ES256"))).status_code
        == 403
    )
    other_aud = {**good, "aud": "billing-api"}
    assert (
        app.get(url, **site, headers=bearer(fake_issuer.mint(other_aud, alg="ES256"))).status_code
        == 401
    )
    stranger = {**good, "iss": "https://elsewhere.example/"}
    assert (
        app.get(url, **site, headers=bearer(fake_issuer.mint(stranger, alg="ES256"))).status_code
        == 401
    )


def test_members_that_cannot_be_used_are_skipped_and_the_rest_verify(
    fake_issuer: FakeIssuer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token = fake_issuer.mint({"sub": "u"}, alg="ES256")
    junk: list[Any] = [
        {"kty": "RSA", "n": 123, "e": "AQAB", "kid": "a"},
        {"kty": "EC", "crv": "P-999", "x": "a", "y": "b", "kid": "b"},
        {"kty": "EC", "crv": "P-256", "x": "!!", "y": "??", "kid": "c"},
        {"kty": "oct", "k": "", "kid": "d"},
        {"kty": "PQC", "kid": "e"},
        {"kty": "RSA", "kid": "f"},
        "not a key",
        {"kty": "EC", "crv": "P-256", "x": "a", "y": "b"},  # no kid
    ]
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [*junk, *fake_issuer.jwks()["keys"]]}))
    app = app_for(rule({"jwks_urls": [f"file://{path}"]}))
    with caplog.at_level(logging.WARNING, "ory_wsgi.pipeline"):
        assert app.get("/x", headers=bearer(token)).status_code == 200
    assert "8 key(s) that cannot be used" in caplog.text
    for document in ("[]", '{"keys": {}}', "not json"):
        path.write_text(document)
        assert (
            app_for(rule({"jwks_urls": [f"file://{path}"]}))
            .get("/x", headers=bearer(token))
            .status_code
            == 503
        )
