"""pytest plugin: `fake_ory` (a local Kratos stand-in), `fake_keto`, `fake_hydra`, `fake_issuer`.

Installed with ory_wsgi (entry point `pytest11`), so any test can ask for `fake_ory`. One server
runs for the whole test session; each test gets it empty (no identities, sessions, counters or
faults) with its settings restored. Example, testing an app that sits behind the proxy::

    import requests

    def test_members_page_shows_the_user(fake_ory, proxy_url):
        identity = fake_ory.add_identity("ada@example.com", "correct horse battery")
        session, token = fake_ory.create_session(identity["id"])
        answer = requests.get(f"{proxy_url}/members", cookies=fake_ory.cookies(token))
        assert "ada@example.com" in answer.text
        assert fake_ory.whoami_calls == 1

    def test_app_survives_ory_outage(fake_ory, proxy_url):
        fake_ory.fail_whoami(503)
        ...

`fake_ory.url` is the stand-in's URL (its Kratos public API); point the proxy's `ory.sdk_url`
at it. Sessions are also usable with `X-Session-Token: <token>` or `Authorization: Bearer`.
Settings, recovery and verification flows work too; codes are not mailed but kept in
`fake_ory.outbox` (`fake_ory.last_code("ada@example.com")`) and shown on `<url>/ui/mail`.
Like Kratos, it ignores a `return_to` outside its own base URL unless allowed: set
`fake_ory.allowed_return_urls = ["http://127.0.0.1:<app port>"]` for login redirects to your app.

`fake_hydra` is Hydra's stand-in (ory_wsgi.testing.hydra): opaque access tokens from
`fake_hydra.issue(...)`, RFC 7662 introspection and the client-credentials grant.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ory_wsgi.testing.hydra import FakeHydra, FakeHydraServer, serve_hydra
from ory_wsgi.testing.issuer import FakeIssuer, FakeIssuerServer, serve_issuer
from ory_wsgi.testing.keto import FakeKeto, FakeKetoServer, serve_keto
from ory_wsgi.testing.kratos import FakeKratos
from ory_wsgi.testing.server import FakeKratosServer, serve


@pytest.fixture(scope="session")
def fake_ory_server() -> Iterator[FakeKratosServer]:
    """The stand-in's server, started once per test session on a free loopback port."""
    server = serve("127.0.0.1", 0)
    yield server
    server.stop()


@pytest.fixture
def fake_ory(fake_ory_server: FakeKratosServer) -> Iterator[FakeKratos]:
    """A local Kratos with nothing in it; `.url`, identities, sessions, counters, faults."""
    kratos = fake_ory_server.kratos
    kratos.reset()
    yield kratos
    kratos.reset()


@pytest.fixture(scope="session")
def fake_keto_server() -> Iterator[FakeKetoServer]:
    """The Keto stand-in's server, started once per test session on a free loopback port."""
    server = serve_keto("127.0.0.1", 0)
    yield server
    server.stop()


@pytest.fixture
def fake_keto(fake_keto_server: FakeKetoServer) -> Iterator[FakeKeto]:
    """A local Keto with no tuples: `.add(...)`, `.check_calls`, `.fail_checks(503)`.

    `fake_keto.url` is its read API base URL: the `ory_permissions` authorizer's `url`.
    """
    keto = fake_keto_server.keto
    keto.reset()
    yield keto
    keto.reset()


@pytest.fixture(scope="session")
def fake_hydra_server() -> Iterator[FakeHydraServer]:
    """The Hydra stand-in's server, started once per test session on a free loopback port."""
    server = serve_hydra("127.0.0.1", 0)
    yield server
    server.stop()


@pytest.fixture
def fake_hydra(fake_hydra_server: FakeHydraServer) -> Iterator[FakeHydra]:
    """A local Hydra with no tokens: `.issue(subject=..., scope=[...], audience=[...], ttl=...)`,
    `.introspection_url`, `.token_url`, `.calls(token)`, `.fail_introspection(503)`.

    Its introspection URL is the `oauth2_introspection` authenticator's `introspection_url`.
    """
    hydra = fake_hydra_server.hydra
    hydra.reset()
    yield hydra
    hydra.reset()


@pytest.fixture(scope="session")
def fake_issuer_server() -> Iterator[FakeIssuerServer]:
    """The token issuer stand-in's server, started once per test session on a free port."""
    server = serve_issuer("127.0.0.1", 0)
    yield server
    server.stop()


@pytest.fixture
def fake_issuer(fake_issuer_server: FakeIssuerServer) -> Iterator[FakeIssuer]:
    """A token issuer with fresh keys: `.mint({...}, alg="ES256")`, `.rotate()`, `.jwks_url`,
    `.jwks_fetches`, `.fail_jwks(500)`, `.down`, `.delay`.

    `fake_issuer.jwks_url` is the `jwt` authenticator's `jwks_urls` entry and
    `fake_issuer.iss` its `trusted_issuers` entry.
    """
    issuer = fake_issuer_server.issuer
    issuer.reset()
    yield issuer
    issuer.reset()
