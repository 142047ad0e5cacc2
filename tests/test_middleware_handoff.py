"""AppHandoff in-process: the app routes on the checked path, whichever key it reads it from."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from werkzeug.test import Client

from ory_wsgi import OryMiddleware

URI_KEYS = ("PATH_INFO", "RAW_URI", "REQUEST_URI")


def echo_uris(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps({key: environ.get(key) for key in URI_KEYS}).encode()]


@pytest.fixture
def client() -> Client:
    # Open paths only: no credential, so Ory is never asked.
    app = OryMiddleware(echo_uris, sdk_url="http://127.0.0.1:9", public_url="https://app.test")
    return Client(app)


@pytest.mark.parametrize(
    ("raw", "checked"),
    [
        ("/docs/../members", "/members"),
        ("/./members?x=1", "/members?x=1"),
        ("//members", "/members"),
        ("/%6Dembers", "/members"),
    ],
)
def test_raw_and_request_uri_are_the_checked_target(client: Client, raw: str, checked: str) -> None:
    seen = client.get("/", environ_overrides={"RAW_URI": raw, "REQUEST_URI": raw}).json
    assert seen == {"PATH_INFO": "/members", "RAW_URI": checked, "REQUEST_URI": checked}


def test_uri_keys_the_server_did_not_set_are_not_invented(client: Client) -> None:
    def without_uris(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        environ.pop("REQUEST_URI")
        return client.application(environ, start_response)

    seen = Client(without_uris).get("/docs/../members").json
    assert seen == {"PATH_INFO": "/members", "RAW_URI": "/members", "REQUEST_URI": None}


def echo_authorization(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps({"authorization": environ.get("HTTP_AUTHORIZATION")}).encode()]


@pytest.mark.parametrize(("keep", "seen"), [(True, "Basic YWRhOnB3"), (False, None)])
def test_keep_client_authorization_in_process_as_in_the_proxy(keep: bool, seen: str | None) -> None:
    """test_forwarder.py pins this through the proxy; the app in-process gets the same."""
    app = OryMiddleware(
        echo_authorization,
        sdk_url="http://127.0.0.1:9",
        public_url="https://app.test",
        jwt={"keep_client_authorization": keep},
    )
    answer = Client(app).get("/", headers={"Authorization": "Basic YWRhOnB3"})
    assert answer.json == {"authorization": seen}
