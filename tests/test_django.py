"""ory_wsgi.django with the example project of docs/embedding.md and the Kratos stand-in."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import django
import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
sys.path.insert(0, str(EXAMPLES))
os.environ["DJANGO_SETTINGS_MODULE"] = "django_app.settings"
django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.contrib.auth.decorators import login_not_required  # noqa: E402
from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.db import connection  # noqa: E402
from django.http import HttpRequest, JsonResponse  # noqa: E402
from django.test import Client, override_settings  # noqa: E402
from django.test.utils import setup_test_environment, teardown_test_environment  # noqa: E402
from django.urls import include, path  # noqa: E402
from ory_flows import PASSWORD, login  # noqa: E402
from rest_framework.permissions import IsAuthenticated  # noqa: E402
from rest_framework.request import Request  # noqa: E402
from rest_framework.response import Response  # noqa: E402
from rest_framework.views import APIView  # noqa: E402
from servers import ThreadedServer  # noqa: E402

from ory_wsgi.drf import OryAuthentication  # noqa: E402
from ory_wsgi.testing import FakeKratos  # noqa: E402

PUBLIC = "http://testserver"


@login_not_required
def echo(request: HttpRequest) -> JsonResponse:
    return JsonResponse(
        {"meta": sorted(k for k in request.META if k.startswith("HTTP_")), "path": request.path}
    )


class Profile(APIView):
    authentication_classes = [OryAuthentication]
    permission_classes = [IsAuthenticated]

    def get(self, request: Request) -> Response:
        return Response({"user": request.user.get_username(), "session": request.auth["id"]})

    def post(self, request: Request) -> Response:
        return Response({"saved": True})


urlpatterns = [
    path("echo/", echo),
    path("members/echo/", echo),
    path("api/profile/", Profile.as_view()),
    path("", include("django_app.urls")),
]


@pytest.fixture(scope="module", autouse=True)
def database() -> Iterator[None]:
    setup_test_environment()
    name = connection.creation.create_test_db(verbosity=0)
    yield
    connection.creation.destroy_test_db(name, verbosity=0)
    teardown_test_environment()


@pytest.fixture
def ory_settings(fake_ory: FakeKratos) -> Iterator[dict[str, Any]]:
    values: dict[str, Any] = {
        "ORY_SDK_URL": fake_ory.url,
        "ORY_PUBLIC_URL": PUBLIC,
        "ROOT_URLCONF": __name__,
    }
    with override_settings(**values):
        yield values


@pytest.fixture
def client(ory_settings: dict[str, Any]) -> Client:
    return Client()


def log_in(
    client: Client, fake_ory: FakeKratos, aal: str = "aal1", traits: dict[str, Any] | None = None
) -> tuple[dict[str, Any], str]:
    """A new identity's session in the client's cookies; returns (identity, token)."""
    identity = fake_ory.add_identity("ada@example.com", PASSWORD, traits=traits)
    _, token = fake_ory.create_session(identity["id"], aal=aal)
    for name, value in fake_ory.cookies(token).items():
        client.cookies[name] = value
    return identity, token


def test_logged_in_identity_is_request_user(client: Client, fake_ory: FakeKratos) -> None:
    identity, _ = log_in(client, fake_ory)
    answer = client.get("/members/")
    assert answer.status_code == 200
    assert answer.json() == {"username": identity["id"], "email": "ada@example.com", "aal": "aal1"}


def test_user_is_created_once_and_traits_follow_the_identity(
    client: Client, fake_ory: FakeKratos
) -> None:
    identity, _ = log_in(client, fake_ory, traits={"name": {"first": "Ada"}})
    with override_settings(
        ORY_USER_TRAITS={"first_name": "traits.name.first", "email": "traits.email"}
    ):
        client.get("/members/")
        client.get("/members/")
    users = get_user_model().objects.filter(username=identity["id"])
    assert [(u.first_name, u.email) for u in users] == [("Ada", "ada@example.com")]


def test_logged_out_browser_goes_to_login_endpoint_then_to_ory(client: Client) -> None:
    first = client.get("/members/", headers={"Accept": "text/html"})
    assert first.status_code == 302
    assert first["Location"] == "/.ory/proxy/login?next=/members/"
    second = client.get(first["Location"], headers={"Accept": "text/html"})
    assert second.status_code == 303
    location = urlsplit(second["Location"])
    assert location.path == "/.ory/self-service/login/browser"
    assert parse_qs(location.query)["return_to"] == [f"{PUBLIC}/members/"]


def test_login_required_middleware_guards_views_by_default(
    client: Client, fake_ory: FakeKratos
) -> None:
    assert client.get("/reports/").status_code == 302
    log_in(client, fake_ory)
    assert client.get("/reports/").status_code == 200


def test_protect_rule_with_aal2_refuses_aal1_session(client: Client, fake_ory: FakeKratos) -> None:
    log_in(client, fake_ory, aal="aal1")
    with override_settings(ORY_PROTECT=[{"prefix": "/members", "aal": "aal2"}]):
        answer = client.get("/members/")
    assert answer.status_code == 403
    assert answer.json()["error"]["id"] == "session_aal2_required"


def test_ory_down_fails_closed_on_protected_path(client: Client, fake_ory: FakeKratos) -> None:
    log_in(client, fake_ory)
    fake_ory.fail_whoami(500)
    with override_settings(ORY_PROTECT=[{"prefix": "/members"}]):
        answer = client.get("/members/")
    assert answer.status_code == 503
    assert answer["Retry-After"]


def test_ory_down_leaves_login_required_view_closed(client: Client, fake_ory: FakeKratos) -> None:
    log_in(client, fake_ory)
    fake_ory.fail_whoami(500)
    assert client.get("/members/").status_code == 302


def test_spoofed_identity_headers_are_removed_from_meta(client: Client) -> None:
    answer = client.get(
        "/echo/",
        headers={
            "Remote-User": "admin",
            "X-Remote-User": "admin",
            "X-Ory-Subject": "admin",
            "Authorization": "Basic x",
        },
    )
    assert not {
        "HTTP_REMOTE_USER",
        "HTTP_X_REMOTE_USER",
        "HTTP_X_ORY_SUBJECT",
        "HTTP_AUTHORIZATION",
    } & set(answer.json()["meta"])


def test_checked_normalised_path_is_the_path_django_routes(
    client: Client, fake_ory: FakeKratos
) -> None:
    log_in(client, fake_ory)
    with override_settings(ORY_PROTECT=[{"prefix": "/members"}]):
        answer = client.get("/x/..//members/echo/")
    assert answer.status_code == 200
    assert answer.json()["path"] == "/members/echo/"


@pytest.mark.parametrize("path", ["/members%0A/", "/members%0d%0a", "/members%09/echo/"])
def test_encoded_control_near_a_protected_path_is_refused(client: Client, path: str) -> None:
    with override_settings(ORY_PROTECT=[{"prefix": "/members"}]):
        answer = client.get(path, headers={"Accept": "application/json"})
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == 400


@pytest.mark.parametrize(
    ("origin", "status"), [(PUBLIC, 204), ("https://spa.example", 403), ("null", 403)]
)
@pytest.mark.parametrize("path", ["/members/echo/", "/members/"])
def test_cors_preflight_on_a_protected_path_never_reaches_a_view(
    client: Client, origin: str, status: int, path: str
) -> None:
    with override_settings(ORY_PROTECT=[{"prefix": "/members"}]):
        answer = client.options(
            path, headers={"Origin": origin, "Access-Control-Request-Method": "GET"}
        )
    assert answer.status_code == status
    assert b"path" not in answer.content and b"email" not in answer.content


def test_plain_options_on_a_protected_path_is_gated(client: Client) -> None:
    with override_settings(ORY_PROTECT=[{"prefix": "/members"}]):
        answer = client.options("/members/echo/", headers={"Accept": "application/json"})
    assert answer.status_code == 401


def test_a_protected_path_response_is_kept_out_of_caches(
    client: Client, fake_ory: FakeKratos
) -> None:
    log_in(client, fake_ory)
    with override_settings(ORY_PROTECT=[{"prefix": "/members"}]):
        answer = client.get("/members/echo/")
        assert answer.status_code == 200
        assert answer["Cache-Control"] == "private, no-store"
        assert not client.get("/echo/").has_header("Cache-Control")


def test_middleware_refuses_to_start_without_the_backend(ory_settings: dict[str, Any]) -> None:
    with override_settings(AUTHENTICATION_BACKENDS=["django.contrib.auth.backends.ModelBackend"]):
        with pytest.raises(ImproperlyConfigured, match="OryBackend"):
            Client().get("/")


def test_drf_gives_the_session_as_request_auth_for_a_session_token(
    client: Client, fake_ory: FakeKratos
) -> None:
    identity = fake_ory.add_identity("ada@example.com", PASSWORD)
    session, token = fake_ory.create_session(identity["id"])
    answer = client.get("/api/profile/", headers={"X-Session-Token": token})
    assert answer.json() == {"user": identity["id"], "session": session["id"]}


def test_drf_answers_401_bearer_without_a_session(client: Client) -> None:
    answer = client.get("/api/profile/")
    assert answer.status_code == 401
    assert answer["WWW-Authenticate"] == "Bearer"


def test_drf_cookie_session_must_pass_csrf_on_unsafe_methods(
    ory_settings: dict[str, Any], fake_ory: FakeKratos
) -> None:
    browser = Client(enforce_csrf_checks=True)
    log_in(browser, fake_ory)
    assert browser.post("/api/profile/").status_code == 403
    identity = fake_ory.add_identity("bob@example.com", PASSWORD)
    _, token = fake_ory.create_session(identity["id"])
    api = Client(enforce_csrf_checks=True)
    assert api.post("/api/profile/", headers={"X-Session-Token": token}).status_code == 200


def test_wsgi_application_forwards_ory_and_asks_once(fake_ory: FakeKratos) -> None:
    from ory_wsgi.django_wsgi import get_wsgi_application

    server = ThreadedServer(lambda environ, start_response: app(environ, start_response))
    fake_ory.allowed_return_urls = [server.url]
    try:
        with override_settings(
            ORY_SDK_URL=fake_ory.url,
            ORY_PUBLIC_URL=server.url,
            ROOT_URLCONF=__name__,
            ALLOWED_HOSTS=["127.0.0.1"],
        ):
            app = get_wsgi_application()
            browser = login(server, fake_ory)  # type: ignore[arg-type]
            fake_ory.reset_counters()
            answer = browser.get(f"{server.url}/members/", timeout=5)
            assert answer.json()["email"] == "ada@example.com"
            assert fake_ory.whoami_calls == 1
    finally:
        server.stop()


def test_docs_show_the_django_example_exactly_as_tested() -> None:
    doc = (EXAMPLES.parent / "docs" / "embedding.md").read_text()
    for name in ("settings.py", "urls.py", "wsgi.py"):
        assert (EXAMPLES / "django_app" / name).read_text() in doc, name
