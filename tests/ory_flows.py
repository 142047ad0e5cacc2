"""Shared steps for tests of the proxy with Ory: start it, log in through it, read the JWT."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Protocol

import requests
from joserfc.jwk import KeySet as JoseKeySet
from servers import Gunicorn

from ory_wsgi.testing import FakeKratos

PASSWORD = "correct horse battery staple"

Start = Callable[..., Gunicorn]


class Served(Protocol):
    url: str


def login(
    proxy: Served,
    fake_ory: FakeKratos | None,
    email: str = "ada@example.com",
    password: str = PASSWORD,
) -> requests.Session:
    """Log in as a browser would: follow Ory's login flow through the proxy and post its form.

    The identity is added to `fake_ory` first; with None it must exist already (the demo's).
    """
    if fake_ory is not None:
        fake_ory.add_identity(email, password)
    browser = requests.Session()
    page = browser.get(f"{proxy.url}/.ory/self-service/login/browser", timeout=10)
    assert page.status_code == 200, page.text
    assert page.url.startswith(f"{proxy.url}/.ory/ui/login?flow="), page.url
    action = re.search(r'<form[^>]*action="([^"]+)"', page.text)
    csrf = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page.text)
    assert action and csrf
    form_action = action.group(1).replace("&amp;", "&")
    assert form_action.startswith(f"{proxy.url}/.ory/self-service/login?flow=")
    done = browser.post(
        form_action,
        data={
            "csrf_token": csrf.group(1),
            "identifier": email,
            "password": password,
            "method": "password",
        },
        timeout=10,
    )
    assert done.status_code == 200, done.text
    assert "ory_kratos_session" in browser.cookies
    return browser


def jwks(proxy: Gunicorn) -> JoseKeySet:
    return JoseKeySet.import_key_set(requests.get(f"{proxy.url}/.ory/jwks.json", timeout=5).json())


def bearer_of(answer: requests.Response) -> str:
    authorization = answer.json()["headers"].get("Authorization", "")
    assert authorization.startswith("Bearer "), answer.json()["headers"]
    return str(authorization[7:])
