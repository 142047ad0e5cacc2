"""Key set (load, generate, rotate, JWKS) and session → JWT minting, at library level."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import multiprocessing
import os
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc import jwk, jwt
from joserfc.errors import JoseError

from ory_wsgi.errors import ConfigError
from ory_wsgi.keys import KeySet, generate_key_set_file, rotate_key_set_file
from ory_wsgi.tokens import TokenMinter

ISSUER = "https://app.example.com"
NOBODY = 65534


def write_private(path: Path, data: str | bytes) -> Path:
    """A key file as an operator would leave it: mode 0600, owned by this user."""
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    path.chmod(0o600)
    return path


def make_session(**changes: Any) -> dict[str, Any]:
    """A whoami answer shaped like Kratos'."""
    session: dict[str, Any] = {
        "id": "5f6c5b1e-9c4d-4c55-8f3a-6c2d1f0e9a11",
        "active": True,
        "expires_at": "2099-01-01T00:00:00.123456789Z",
        "authenticated_at": "2024-05-01T10:00:00.5Z",
        "authenticator_assurance_level": "aal1",
        "authentication_methods": [{"method": "password", "aal": "aal1"}],
        "issued_at": "2024-05-01T10:00:00.5Z",
        "identity": {
            "id": "8b9c1c2e-0e5b-4a8e-9a55-2b4a0c6d7e11",
            "schema_id": "default",
            "state": "active",
            "traits": {"email": "ada@example.com", "name": {"first": "Ada"}},
            "updated_at": "2024-05-01T09:00:00Z",
        },
    }
    session.update(changes)
    return session


def rfc3339(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + ".987654321Z"


def published(key_set: KeySet) -> jwk.KeySet:
    """The key set a verifying app builds from the served JWKS bytes."""
    return jwk.KeySet.import_key_set(json.loads(key_set.jwks_document()))


def verify(token: str, key_set: KeySet) -> jwt.Token:
    """What an app behind the proxy does: ES256 only, against the published JWKS."""
    decoded = jwt.decode(token, published(key_set), algorithms=["ES256"])
    jwt.JWTClaimsRegistry(iss={"essential": True, "value": ISSUER}).validate(decoded.claims)
    return decoded


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture
def key_set(tmp_path: Path) -> KeySet:
    return KeySet.ensure("", str(tmp_path / "state"))


@pytest.fixture
def minter(key_set: KeySet) -> TokenMinter:
    return TokenMinter(key_set, ISSUER, ttl=60, claims={"email": "identity.traits.email"})


def ec_pem(curve: ec.EllipticCurve, fmt: serialization.PrivateFormat) -> bytes:
    return ec.generate_private_key(curve).private_bytes(
        serialization.Encoding.PEM, fmt, serialization.NoEncryption()
    )


# --- minting ---------------------------------------------------------------


def test_minted_token_verifies_against_published_jwks(minter: TokenMinter, key_set: KeySet):
    token = verify(minter.mint(make_session()), key_set)
    assert token.header == {"alg": "ES256", "kid": key_set.signing_kid, "typ": "JWT"}


def test_token_carries_subject_session_and_issuer(minter: TokenMinter, key_set: KeySet):
    session = make_session()
    claims = verify(minter.mint(session), key_set).claims
    assert claims["sub"] == session["identity"]["id"]
    assert claims["session"] == session
    assert claims["iss"] == ISSUER
    assert "aud" not in claims


def test_token_has_uuid4_jti_and_iat_equal_to_nbf(minter: TokenMinter, key_set: KeySet):
    claims = verify(minter.mint(make_session()), key_set).claims
    assert len(claims["jti"]) == 36 and claims["jti"][14] == "4"
    assert claims["nbf"] == claims["iat"]
    assert abs(claims["iat"] - time.time()) < 30


def test_audience_is_set_when_configured(key_set: KeySet):
    minter = TokenMinter(key_set, ISSUER, audience="my-app")
    assert verify(minter.mint(make_session()), key_set).claims["aud"] == "my-app"


def test_extra_claim_is_copied_from_session_path(minter: TokenMinter, key_set: KeySet):
    assert verify(minter.mint(make_session()), key_set).claims["email"] == "ada@example.com"


def test_extra_claim_with_missing_path_is_omitted(key_set: KeySet):
    minter = TokenMinter(key_set, ISSUER, claims={"phone": "identity.traits.phone.number"})
    assert "phone" not in verify(minter.mint(make_session()), key_set).claims


def test_extra_claim_may_not_replace_a_registered_claim(key_set: KeySet):
    with pytest.raises(ConfigError, match="sub"):
        TokenMinter(key_set, ISSUER, claims={"sub": "identity.traits.email"})


def test_exp_is_iat_plus_ttl(key_set: KeySet):
    minter = TokenMinter(key_set, ISSUER, ttl=90)
    claims = verify(minter.mint(make_session()), key_set).claims
    assert claims["exp"] - claims["iat"] == 90


def test_exp_is_capped_by_session_expires_at(minter: TokenMinter, key_set: KeySet):
    session_end = int(time.time()) + 20
    claims = verify(minter.mint(make_session(expires_at=rfc3339(session_end))), key_set).claims
    assert claims["exp"] == session_end


def test_exp_is_now_when_session_already_expired(minter: TokenMinter, key_set: KeySet):
    token = minter.mint(make_session(expires_at=rfc3339(time.time() - 3600)))
    claims = jwt.decode(token, published(key_set), algorithms=["ES256"]).claims
    assert claims["exp"] == claims["iat"]


# --- forgeries ---------------------------------------------------------------


def test_token_with_alg_none_fails_verification(minter: TokenMinter, key_set: KeySet):
    genuine = minter.mint(make_session())
    payload = genuine.split(".")[1]
    header = b64(json.dumps({"alg": "none", "kid": key_set.signing_kid, "typ": "JWT"}).encode())
    with pytest.raises(JoseError):
        jwt.decode(f"{header}.{payload}.", published(key_set), algorithms=["ES256"])


def test_hs256_token_keyed_with_the_public_key_fails_verification(key_set: KeySet):
    # Signed by hand: joserfc itself refuses to use a public key as an HMAC secret.
    header = b64(json.dumps({"alg": "HS256", "kid": key_set.signing_kid, "typ": "JWT"}).encode())
    payload = b64(json.dumps({"iss": ISSUER, "sub": "attacker"}).encode())
    for secret in (key_set.signing_key.as_pem(private=False), key_set.jwks_document()):
        mac = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        with pytest.raises(JoseError):
            jwt.decode(f"{header}.{payload}.{b64(mac)}", published(key_set), algorithms=["ES256"])


def test_modified_payload_fails_verification(minter: TokenMinter, key_set: KeySet):
    header, payload, signature = minter.mint(make_session()).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "someone-else"
    forged = f"{header}.{b64(json.dumps(claims).encode())}.{signature}"
    with pytest.raises(JoseError):
        jwt.decode(forged, published(key_set), algorithms=["ES256"])


def test_token_signed_by_another_key_fails_verification(key_set: KeySet):
    stranger = jwk.ECKey.generate_key("P-256")
    forged = jwt.encode(
        {"alg": "ES256", "kid": key_set.signing_kid}, {"iss": ISSUER, "sub": "x"}, stranger
    )
    with pytest.raises(JoseError):
        jwt.decode(forged, published(key_set), algorithms=["ES256"])


# --- the JWKS document -------------------------------------------------------


def test_jwks_publishes_only_public_members(key_set: KeySet):
    (member,) = json.loads(key_set.jwks_document())["keys"]
    assert member == {
        "kty": "EC",
        "crv": "P-256",
        "x": member["x"],
        "y": member["y"],
        "kid": key_set.signing_kid,
        "use": "sig",
        "alg": "ES256",
    }


def test_jwks_bytes_are_identical_across_loads(key_set: KeySet):
    again = KeySet.load(key_set.path)
    assert again.jwks_document() == key_set.jwks_document()


# --- loading -----------------------------------------------------------------


def rsa_jwk_set() -> str:
    return json.dumps(jwk.KeySet([jwk.RSAKey.generate_key(2048)]).as_dict(private=True))


def p384_jwk_set() -> str:
    return json.dumps(jwk.KeySet([jwk.ECKey.generate_key("P-384")]).as_dict(private=True))


def public_only_jwk_set() -> str:
    return json.dumps(jwk.KeySet([jwk.ECKey.generate_key("P-256")]).as_dict(private=False))


def rsa_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    fmt = serialization.PrivateFormat.PKCS8
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()).decode()


def public_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def encrypted_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    ).decode()


BAD_KEY_FILES = {
    "garbage": lambda: "hello\nworld\n",
    "invalid_json": lambda: '{"keys": [',
    "empty_key_list": lambda: '{"keys": []}',
    "rsa_jwk": rsa_jwk_set,
    "p384_jwk": p384_jwk_set,
    "public_only_jwk": public_only_jwk_set,
    "point_off_curve": lambda: json.dumps(
        {"keys": [{"kty": "EC", "crv": "P-256", "x": "AQ", "y": "AQ", "d": "AQ"}]}
    ),
    "rsa_pem": rsa_pem,
    "p384_pem": lambda: ec_pem(ec.SECP384R1(), serialization.PrivateFormat.PKCS8).decode(),
    "public_pem": public_pem,
    "encrypted_pem": encrypted_pem,
}


@pytest.mark.parametrize("content", BAD_KEY_FILES.values(), ids=BAD_KEY_FILES.keys())
def test_unusable_key_file_is_a_one_line_config_error(tmp_path: Path, content: Any):
    path = write_private(tmp_path / "keys", content())
    with pytest.raises(ConfigError) as error:
        KeySet.load(str(path))
    message = str(error.value)
    assert message.startswith(f"{path}: ") and "\n" not in message


def test_missing_key_file_is_a_one_line_config_error(tmp_path: Path):
    path = tmp_path / "absent.json"
    with pytest.raises(ConfigError, match=r"absent\.json: cannot read key file") as error:
        KeySet.ensure(str(path), str(tmp_path / "state"))
    assert "\n" not in str(error.value)


def test_two_keys_with_one_kid_are_refused(tmp_path: Path):
    keys = [jwk.ECKey.generate_key("P-256", parameters={"kid": "same"}) for _ in range(2)]
    path = write_private(tmp_path / "keys.json", json.dumps(jwk.KeySet(keys).as_dict(private=True)))
    with pytest.raises(ConfigError, match="same"):
        KeySet.load(str(path))


@pytest.mark.parametrize(
    "fmt",
    [serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL],
    ids=["pkcs8", "sec1"],
)
def test_pem_private_key_signs_verifiable_tokens(tmp_path: Path, fmt: Any):
    path = write_private(tmp_path / "key.pem", ec_pem(ec.SECP256R1(), fmt))
    key_set = KeySet.load(str(path))
    verify(TokenMinter(key_set, ISSUER).mint(make_session()), key_set)


def test_kid_of_key_without_one_is_its_thumbprint(tmp_path: Path):
    key = jwk.ECKey.generate_key("P-256")
    path = write_private(tmp_path / "keys.json", json.dumps({"keys": [key.as_dict(private=True)]}))
    assert "kid" not in json.loads(path.read_text())["keys"][0]
    assert KeySet.load(str(path)).signing_kid == key.thumbprint()


def test_later_public_only_keys_are_published(tmp_path: Path):
    signing = jwk.ECKey.generate_key("P-256", auto_kid=True)
    retired = jwk.ECKey.generate_key("P-256", auto_kid=True)
    document = {"keys": [signing.as_dict(private=True), retired.as_dict(private=False)]}
    path = write_private(tmp_path / "keys.json", json.dumps(document))
    assert KeySet.load(str(path)).kids == (signing.kid, retired.kid)


def test_configured_keys_file_is_used_and_no_state_dir_created(tmp_path: Path):
    path = tmp_path / "keys.json"
    kid = generate_key_set_file(str(path))
    key_set = KeySet.ensure(str(path), str(tmp_path / "state"))
    assert key_set.signing_kid == kid
    assert not (tmp_path / "state").exists()


# --- generation, files and modes -------------------------------------------


def test_generated_key_set_file_is_private(tmp_path: Path):
    KeySet.ensure("", str(tmp_path / "state"))
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "state" / "jwks.json").stat().st_mode) == 0o600


def test_generated_key_set_is_reused_on_restart(tmp_path: Path):
    first = KeySet.ensure("", str(tmp_path / "state"))
    second = KeySet.ensure("", str(tmp_path / "state"))
    assert second.jwks_document() == first.jwks_document()


def ensure_in_another_process(state_dir: str, barrier: Any, results: Any) -> None:
    barrier.wait()
    results.put(KeySet.ensure("", state_dir).jwks_document())


def test_workers_racing_to_generate_end_with_one_key_set(tmp_path: Path):
    state_dir = str(tmp_path / "state")
    context = multiprocessing.get_context("spawn")
    count = 6
    barrier = context.Barrier(count)
    results = context.Queue()
    workers = [
        context.Process(target=ensure_in_another_process, args=(state_dir, barrier, results))
        for _ in range(count)
    ]
    for worker in workers:
        worker.start()
    documents = {results.get(timeout=60) for _ in workers}
    for worker in workers:
        worker.join(timeout=30)
    assert len(documents) == 1
    assert os.listdir(state_dir) == ["jwks.json"]


def test_generate_refuses_to_overwrite(tmp_path: Path):
    path = tmp_path / "keys.json"
    generate_key_set_file(str(path))
    before = path.read_bytes()
    with pytest.raises(ConfigError, match="already exists"):
        generate_key_set_file(str(path))
    assert path.read_bytes() == before


def test_generate_writes_mode_0600(tmp_path: Path):
    path = tmp_path / "keys.json"
    generate_key_set_file(str(path))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# --- permissions: refused with one line that says how to fix them --------------


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o775, 0o720, 0o702, 0o1777])
def test_state_dir_writable_by_others_is_refused(tmp_path: Path, mode: int):
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(mode)
    with pytest.raises(ConfigError) as error:
        KeySet.ensure("", str(state))
    message = str(error.value)
    assert message.startswith(f"{state}: the state directory is writable by group or others")
    assert f"`chmod 700 {state}`" in message and "\n" not in message
    assert os.listdir(state) == []


@pytest.mark.parametrize("mode", [0o700, 0o750, 0o755])
def test_state_dir_readable_but_not_writable_by_others_is_used(tmp_path: Path, mode: int):
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(mode)
    KeySet.ensure("", str(state))
    assert stat.S_IMODE((state / "jwks.json").stat().st_mode) == 0o600


def test_state_dir_of_another_user_is_refused(tmp_path: Path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    os.chown(state, NOBODY, NOBODY)
    with pytest.raises(ConfigError) as error:
        KeySet.ensure("", str(state))
    message = str(error.value)
    assert message.startswith(f"{state}: the state directory belongs to nobody")
    assert f"`chown root {state}`" in message and f"`chmod 700 {state}`" in message


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o620, 0o606, 0o602, 0o404])
def test_key_file_open_to_group_or_others_is_refused(tmp_path: Path, mode: int):
    path = tmp_path / "keys.json"
    generate_key_set_file(str(path))
    path.chmod(mode)
    for attempt in (
        lambda: KeySet.load(str(path)),
        lambda: KeySet.ensure(str(path), ""),
        lambda: rotate_key_set_file(str(path)),
    ):
        with pytest.raises(ConfigError) as error:
            attempt()
        message = str(error.value)
        assert message.startswith(f"{path}: the key file holds a private key and is open")
        assert f"(mode {mode:04o})" in message and f"`chmod 600 {path}`" in message


def test_generated_key_file_opened_up_later_is_refused_at_the_next_start(tmp_path: Path):
    state = tmp_path / "state"
    KeySet.ensure("", str(state))
    (state / "jwks.json").chmod(0o644)
    with pytest.raises(ConfigError, match=r"chmod 600 .*jwks\.json"):
        KeySet.ensure("", str(state))


def test_key_file_of_another_user_is_refused(tmp_path: Path):
    path = tmp_path / "keys.json"
    generate_key_set_file(str(path))
    os.chown(path, NOBODY, NOBODY)
    with pytest.raises(ConfigError) as error:
        KeySet.load(str(path))
    message = str(error.value)
    assert message.startswith(f"{path}: the key file belongs to nobody, not to root")
    assert f"`chown root {path}`" in message and f"`chmod 600 {path}`" in message


def test_running_key_set_keeps_its_keys_when_the_file_is_opened_up(tmp_path: Path):
    path = str(tmp_path / "keys.json")
    generate_key_set_file(path)
    key_set = KeySet.load(path, check_interval=0)
    rotate_key_set_file(path)
    os.chmod(path, 0o644)
    assert key_set.reload_if_changed() is False


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory another user may enter (pytest's tmp_path is private to this one)."""
    directory = Path(tempfile.mkdtemp(prefix="ory-wsgi-keys-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory)


def load_as_user(path: str, uid: int, results: Any) -> None:
    """In a forked child: become `uid` (no exec: the interpreter stays loaded), load the keys."""
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    try:
        results.put(("ok", KeySet.load(path).kids))
    except ConfigError as error:
        results.put(("error", str(error)))


def load_as_nobody(path: Path) -> tuple[str, Any]:
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(target=load_as_user, args=(str(path), NOBODY, results))
    child.start()
    outcome: tuple[str, Any] = results.get(timeout=30)
    child.join(timeout=30)
    return outcome


def test_root_owned_key_file_readable_by_the_group_is_used(shared_dir: Path):
    """A Kubernetes secret with fsGroup: owned by root, mode 0440, group the pod's."""
    path = shared_dir / "keys.json"
    kid = generate_key_set_file(str(path))
    os.chown(path, 0, NOBODY)
    path.chmod(0o440)
    assert load_as_nobody(path) == ("ok", (kid,))


@pytest.mark.parametrize("mode", [0o444, 0o644, 0o460])
def test_root_owned_key_file_open_to_others_is_refused(shared_dir: Path, mode: int):
    path = shared_dir / "keys.json"
    generate_key_set_file(str(path))
    os.chown(path, 0, NOBODY)
    path.chmod(mode)
    outcome, message = load_as_nobody(path)
    assert outcome == "error"
    assert message.startswith(f"{path}: the key file holds a private key and is open to others")
    assert f"`chmod 640 {path}`" in message


# --- rotation ------------------------------------------------------------------


def test_rotate_puts_new_signing_key_first_and_keeps_old_ones(tmp_path: Path):
    path = str(tmp_path / "keys.json")
    old = generate_key_set_file(path)
    new = rotate_key_set_file(path)
    assert KeySet.load(path).kids == (new, old)


def test_rotate_keeps_mode_0600(tmp_path: Path):
    path = tmp_path / "keys.json"
    generate_key_set_file(str(path))
    rotate_key_set_file(str(path))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ["keys.json"]


def test_rotate_refuses_a_pem_file(tmp_path: Path):
    path = write_private(
        tmp_path / "key.pem", ec_pem(ec.SECP256R1(), serialization.PrivateFormat.PKCS8)
    )
    with pytest.raises(ConfigError, match="PEM"):
        rotate_key_set_file(str(path))


def test_running_key_set_picks_up_rotation(tmp_path: Path):
    path = str(tmp_path / "keys.json")
    generate_key_set_file(path)
    key_set = KeySet.load(path, check_interval=0)
    new = rotate_key_set_file(path)
    assert key_set.reload_if_changed() is True
    assert key_set.signing_kid == new


def test_unchanged_key_file_is_not_reloaded(tmp_path: Path):
    path = str(tmp_path / "keys.json")
    generate_key_set_file(path)
    assert KeySet.load(path, check_interval=0).reload_if_changed() is False


def test_key_file_is_not_looked_at_again_before_the_interval(tmp_path: Path):
    path = str(tmp_path / "keys.json")
    old = generate_key_set_file(path)
    key_set = KeySet.load(path, check_interval=3600)
    rotate_key_set_file(path)
    assert key_set.reload_if_changed() is False
    assert key_set.signing_kid == old


def test_broken_key_file_keeps_the_loaded_keys(tmp_path: Path):
    path = tmp_path / "keys.json"
    kid = generate_key_set_file(str(path))
    key_set = KeySet.load(str(path), check_interval=0)
    path.write_text("{ half written")
    assert key_set.reload_if_changed() is False
    assert key_set.signing_kid == kid


def test_token_from_before_rotation_still_verifies_after(tmp_path: Path):
    path = str(tmp_path / "keys.json")
    generate_key_set_file(path)
    key_set = KeySet.load(path, check_interval=0)
    before = TokenMinter(key_set, ISSUER).mint(make_session())
    rotate_key_set_file(path)
    key_set.reload_if_changed()
    verify(before, key_set)


# --- the token cache -----------------------------------------------------------


def test_same_session_reuses_cached_token(minter: TokenMinter):
    session = make_session()
    assert minter.mint(session) == minter.mint(dict(session))


def test_other_session_gets_its_own_token(minter: TokenMinter):
    assert minter.mint(make_session()) != minter.mint(make_session(id="another-session"))


def test_step_up_gets_a_new_token(minter: TokenMinter, key_set: KeySet):
    minter.mint(make_session())
    stepped_up = make_session(
        authenticator_assurance_level="aal2", authenticated_at="2024-05-01T10:05:00Z"
    )
    assert verify(minter.mint(stepped_up), key_set).claims["session"] == stepped_up


def test_edited_identity_gets_a_new_token(minter: TokenMinter, key_set: KeySet):
    minter.mint(make_session())
    edited = make_session()
    edited["identity"] = {**edited["identity"], "updated_at": "2024-06-01T00:00:00Z"}
    edited["identity"]["traits"] = {"email": "new@example.com"}
    assert verify(minter.mint(edited), key_set).claims["email"] == "new@example.com"


def test_token_without_remaining_life_is_not_reused(minter: TokenMinter):
    expired = make_session(expires_at=rfc3339(time.time() - 60))
    assert minter.mint(expired) != minter.mint(expired)


def test_cache_drops_least_recently_used_beyond_its_size(key_set: KeySet):
    minter = TokenMinter(key_set, ISSUER, cache_size=2)
    first = minter.mint(make_session(id="a"))
    minter.mint(make_session(id="b"))
    minter.mint(make_session(id="c"))
    assert minter.mint(make_session(id="a")) != first


def test_cache_keeps_recently_used_entry(key_set: KeySet):
    minter = TokenMinter(key_set, ISSUER, cache_size=2)
    first = minter.mint(make_session(id="a"))
    minter.mint(make_session(id="b"))
    minter.mint(make_session(id="a"))
    minter.mint(make_session(id="c"))
    assert minter.mint(make_session(id="a")) == first


def test_forgotten_session_gets_a_new_token(minter: TokenMinter):
    session = make_session()
    first = minter.mint(session)
    minter.forget(session["id"])
    assert minter.mint(session) != first


def test_rotation_drops_cached_tokens_and_signs_with_new_key(tmp_path: Path):
    path = str(tmp_path / "keys.json")
    generate_key_set_file(path)
    key_set = KeySet.load(path, check_interval=0)
    minter = TokenMinter(key_set, ISSUER)
    before = minter.mint(make_session())
    new = rotate_key_set_file(path)
    after = minter.mint(make_session())
    assert after != before
    assert verify(after, key_set).header["kid"] == new


def test_concurrent_minting_yields_verifiable_tokens_and_bounded_cache(key_set: KeySet):
    minter = TokenMinter(key_set, ISSUER, cache_size=5)
    tokens: list[str] = []
    lock = threading.Lock()

    def run(worker: int) -> None:
        for index in range(40):
            token = minter.mint(make_session(id=f"s{(worker + index) % 12}"))
            with lock:
                tokens.append(token)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(tokens) == 240
    for token in set(tokens):
        verify(token, key_set)
    assert minter.cached_tokens <= 5
