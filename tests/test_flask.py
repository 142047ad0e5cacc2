"""ory_wsgi.flask with the example app of docs/embedding.md and the Kratos stand-in over HTTP."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import flask_login
import pytest
from flask import Flask, request
from flask.testing import FlaskClient
from ory_flows import PASSWORD

from ory_wsgi.flask import Ory, OryUser, current_session, login_required, request_loader
from ory_wsgi.testing import FakeKratos

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
sys.path.insert(0, str(EXAMPLES))

from flask_app import create_app  # noqa: E402

PUBLIC = "http://localhost"


@pytest.fixture
def app(fake_ory: FakeKratos) -> Flask:
    app = create_app({"ORY_SDK_URL": fake_ory.url, "ORY_PUBLIC_URL": PUBLIC})

    @app.route("/echo", methods=["GET", "OPTIONS"])
    def echo() -> dict[str, Any]:
        return {
            "headers": sorted(request.headers.keys()),
            "session": current_session["id"] if current_session else None,
        }

    return app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def log_in(client: FlaskClient, fake_ory: FakeKratos, aal: str = "aal1") -> dict[str, Any]:
    """Give the client's cookie jar a session of a new identity; returns the session."""
    identity = fake_ory.add_identity("ada@example.com", PASSWORD)
    session, token = fake_ory.create_session(identity["id"], aal=aal)
    for name, value in fake_ory.cookies(token).items():
        client.set_cookie(name, value)
    return session


def test_a_login_required_response_is_kept_out_of_caches(
    client: FlaskClient, fake_ory: FakeKratos
) -> None:
    log_in(client, fake_ory)
    assert client.get("/members").headers["Cache-Control"] == "private, no-store"
    assert "Cache-Control" not in client.get("/").headers


def test_a_protected_path_response_is_kept_out_of_caches(
    ruled_client: FlaskClient, fake_ory: FakeKratos
) -> None:
    log_in(ruled_client, fake_ory)
    answer = ruled_client.get("/private/x")
    assert answer.status_code == 200
    assert answer.headers["Cache-Control"] == "private, no-store"


def test_logged_in_user_reaches_the_members_page_as_herself(
    client: FlaskClient, fake_ory: FakeKratos
) -> None:
    log_in(client, fake_ory)
    answer = client.get("/members")
    assert answer.status_code == 200
    assert answer.json is not None and answer.json["email"] == "ada@example.com"


def test_current_identity_is_none_when_logged_out(
    client: FlaskClient, fake_ory: FakeKratos
) -> None:
    answer = client.get("/")
    assert answer.json == {"user": None, "login": "/.ory/self-service/login/browser"}
    assert fake_ory.whoami_calls == 0


def test_logged_out_browser_is_redirected_to_ory_login(client: FlaskClient) -> None:
    answer = client.get("/members?tab=1", headers={"Accept": "text/html"})
    assert answer.status_code == 303
    location = urlsplit(answer.headers["Location"])
    assert location.path == "/.ory/self-service/login/browser"
    assert parse_qs(location.query)["return_to"] == [f"{PUBLIC}/members?tab=1"]


def test_logged_out_api_client_gets_401_json(client: FlaskClient) -> None:
    answer = client.get("/members", headers={"Accept": "application/json"})
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"] == "Bearer"
    assert answer.json is not None and answer.json["error"]["code"] == 401


def test_aal_too_low_gets_403(client: FlaskClient, fake_ory: FakeKratos) -> None:
    log_in(client, fake_ory, aal="aal1")
    answer = client.post("/members/settings")
    assert answer.status_code == 403
    assert answer.json is not None and answer.json["error"]["id"] == "session_aal2_required"


def test_aal2_session_passes_the_aal2_view(client: FlaskClient, fake_ory: FakeKratos) -> None:
    log_in(client, fake_ory, aal="aal2")
    answer = client.post("/members/settings")
    assert answer.status_code == 200


def test_ory_down_gives_503_on_login_required_view(
    client: FlaskClient, fake_ory: FakeKratos
) -> None:
    log_in(client, fake_ory)
    fake_ory.fail_whoami(500)
    answer = client.get("/members")
    assert answer.status_code == 503
    assert answer.headers["Retry-After"]


def guarded_route(app: Flask) -> list[str]:
    """Adds a login_required GET/OPTIONS view at /guarded; the list records each run."""
    ran: list[str] = []

    @app.route("/guarded", methods=["GET", "OPTIONS"])
    @login_required
    def guarded() -> str:
        ran.append(request.method)
        return "ok"

    return ran


def test_options_is_gated_by_login_required_like_any_method(
    app: Flask, client: FlaskClient
) -> None:
    ran = guarded_route(app)
    assert client.options("/guarded", headers={"Accept": "application/json"}).status_code == 401
    assert client.get("/guarded", headers={"Accept": "application/json"}).status_code == 401
    assert not ran


@pytest.mark.parametrize(
    ("origin", "status"), [(PUBLIC, 204), ("https://spa.example", 403), ("null", 403)]
)
def test_cors_preflight_never_runs_a_login_required_view(
    app: Flask, client: FlaskClient, origin: str, status: int
) -> None:
    ran = guarded_route(app)
    answer = client.options(
        "/guarded", headers={"Origin": origin, "Access-Control-Request-Method": "GET"}
    )
    assert answer.status_code == status
    assert not ran


@pytest.mark.parametrize("path", ["/private", "/private/x"])
def test_cors_preflight_on_a_protected_path_never_reaches_the_app(
    ruled_client: FlaskClient, path: str
) -> None:
    answer = ruled_client.options(
        path, headers={"Origin": PUBLIC, "Access-Control-Request-Method": "POST"}
    )
    assert answer.status_code == 204
    assert answer.data == b""


def test_spoofed_identity_headers_never_reach_the_view(client: FlaskClient) -> None:
    answer = client.get(
        "/echo",
        headers={
            "X-Remote-User": "admin",
            "X-Ory-Subject": "admin",
            "Remote-User": "admin",
            "Authorization": "Bearer x",
        },
    )
    assert answer.json is not None
    assert not {"X-Remote-User", "X-Ory-Subject", "Remote-User", "Authorization"} & set(
        answer.json["headers"]
    )


def test_current_session_is_the_whoami_session(client: FlaskClient, fake_ory: FakeKratos) -> None:
    session = log_in(client, fake_ory)
    answer = client.get("/echo")
    assert answer.json is not None and answer.json["session"] == session["id"]


def test_init_app_in_a_factory_reads_protect_rules_from_config(fake_ory: FakeKratos) -> None:
    ory = Ory()
    app = Flask(__name__)
    app.config.update(
        ORY_SDK_URL=fake_ory.url, ORY_PUBLIC_URL=PUBLIC, ORY_PROTECT=[{"prefix": "/private"}]
    )
    ory.init_app(app)
    app.add_url_rule("/private/x", "x", lambda: "secret")
    answer = app.test_client().get("/private/x", headers={"Accept": "application/json"})
    assert answer.status_code == 401


@pytest.fixture
def ruled_client(fake_ory: FakeKratos) -> FlaskClient:
    """An app with a `[[protect]]` rule on /private and a view that tells what it routed."""
    app = Flask(__name__)
    app.config.update(
        ORY_SDK_URL=fake_ory.url, ORY_PUBLIC_URL=PUBLIC, ORY_PROTECT=[{"prefix": "/private"}]
    )
    Ory(app)

    @app.route("/<path:rest>", methods=["GET", "POST", "OPTIONS"])
    def anything(rest: str) -> dict[str, Any]:
        return {"path": request.path, "secret": rest.startswith("private")}

    return app.test_client()


@pytest.mark.parametrize("path", ["/private%0A", "/private%0d%0a", "/private%09/x", "/private%7F"])
def test_encoded_control_near_a_protected_path_is_refused(
    ruled_client: FlaskClient, path: str
) -> None:
    answer = ruled_client.get(path, headers={"Accept": "application/json"})
    assert answer.status_code == 400
    assert answer.json is not None and answer.json["error"]["code"] == 400


def test_flask_login_request_loader_gives_current_user(fake_ory: FakeKratos) -> None:
    app = create_app({"ORY_SDK_URL": fake_ory.url, "ORY_PUBLIC_URL": PUBLIC, "SECRET_KEY": "test"})
    manager = flask_login.LoginManager(app)
    manager.request_loader(request_loader())
    manager.login_view = "/.ory/proxy/login"

    @app.get("/who")
    @flask_login.login_required
    def who() -> dict[str, Any]:
        user = flask_login.current_user
        assert isinstance(user._get_current_object(), OryUser)
        return {"id": user.get_id(), "email": user.traits["email"]}

    client = app.test_client()
    log_in(client, fake_ory)
    answer = client.get("/who")
    assert answer.json is not None and answer.json["email"] == "ada@example.com"


def test_flask_login_anonymous_is_sent_to_the_login_endpoint_and_on_to_ory(
    fake_ory: FakeKratos,
) -> None:
    app = create_app({"ORY_SDK_URL": fake_ory.url, "ORY_PUBLIC_URL": PUBLIC, "SECRET_KEY": "test"})
    manager = flask_login.LoginManager(app)
    manager.request_loader(request_loader())
    manager.login_view = "/.ory/proxy/login"
    app.add_url_rule("/who", "who", flask_login.login_required(lambda: "x"))
    client = app.test_client()
    first = client.get("/who", headers={"Accept": "text/html"})
    assert first.status_code == 302
    second = client.get(first.headers["Location"], headers={"Accept": "text/html"})
    assert second.status_code == 303
    assert parse_qs(urlsplit(second.headers["Location"]).query)["return_to"] == [f"{PUBLIC}/who"]


def test_docs_show_the_flask_example_exactly_as_tested() -> None:
    doc = (EXAMPLES.parent / "docs" / "embedding.md").read_text()
    assert (EXAMPLES / "flask_app.py").read_text() in doc
