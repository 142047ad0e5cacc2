"""The demo in a real browser: Debian's Chromium, headless, driven by Playwright.

No browser is downloaded: Playwright drives `/usr/bin/chromium` (`.ci/run` installs it). The
walk is what a newcomer does: home → members → login → members with the JWT → logout →
members asks for a login again; and a sign-up. Every URL the browser asks for, redirects
included, stays on the proxy's public origin: Ory and the app are never reached directly.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from servers import free_port

from ory_wsgi.demo import DEMO_EMAIL, DEMO_PASSWORD, Demo

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def demo() -> Iterator[Demo]:
    running = Demo(port=free_port())
    running.serve_in_background()
    yield running
    running.close()


class Visit:
    """A fresh browser context on the demo that records every URL it requests."""

    def __init__(self, browser: Browser, demo: Demo) -> None:
        self.context = browser.new_context()
        self.context.set_default_timeout(10_000)
        self.page: Page = self.context.new_page()
        self.base = demo.public_url
        self.urls: list[str] = []
        self.page.on("request", lambda request: self.urls.append(request.url))

    def foreign_urls(self) -> list[str]:
        origin = urlsplit(self.base)
        return [
            url
            for url in self.urls
            if (urlsplit(url).scheme, urlsplit(url).netloc) != (origin.scheme, origin.netloc)
        ]


@pytest.fixture
def visit(browser: Browser, demo: Demo) -> Iterator[Visit]:
    opened = Visit(browser, demo)
    yield opened
    assert opened.urls
    assert opened.foreign_urls() == []
    opened.context.close()


def log_in(page: Page, email: str, password: str) -> None:
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("ID").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def test_login_members_jwt_and_logout(visit: Visit) -> None:
    page, base = visit.page, visit.base
    page.goto(f"{base}/")
    nav = page.locator("header")
    expect(nav.get_by_role("link", name="Log in")).to_be_visible()
    expect(nav.get_by_role("link", name="Sign up")).to_be_visible()
    expect(page.get_by_text("you are not logged in")).to_be_visible()

    nav.get_by_role("link", name="Members area").click()
    expect(page).to_have_url(re.compile(re.escape(f"{base}/.ory/ui/login?flow=")))
    expect(page.get_by_text(f"Demo account: {DEMO_EMAIL}")).to_be_visible()
    expect(page.get_by_role("link", name="Back to the app")).to_have_attribute("href", f"{base}/")
    log_in(page, DEMO_EMAIL, DEMO_PASSWORD)

    expect(page).to_have_url(f"{base}/members")
    expect(page.get_by_text(f"Logged in as {DEMO_EMAIL}: the JWT verified")).to_be_visible()
    claims = page.locator("pre").inner_text()
    assert f'"iss": "{base}"' in claims and f'"email": "{DEMO_EMAIL}"' in claims
    assert f'"schema_url": "{base}/.ory/schemas/' in claims
    expect(nav.get_by_role("link", name="Log in")).to_have_count(0)
    nav.get_by_role("link", name="Admin area").click()
    expect(page.get_by_text(f"Welcome, {DEMO_EMAIL}: Keto allowed")).to_be_visible()
    response = page.request.get(f"{base}/favicon.ico")
    assert response.ok and response.headers["content-type"] == "image/svg+xml"

    nav.get_by_role("link", name="Settings").click()
    expect(page.get_by_role("heading", name="Account settings")).to_be_visible()
    expect(page.get_by_label("E-Mail")).to_have_value(DEMO_EMAIL)
    page.get_by_role("link", name="Done").click()
    expect(page).to_have_url(f"{base}/")

    nav.get_by_role("link", name="Log out").click()
    expect(page).to_have_url(f"{base}/")
    expect(nav.get_by_role("link", name="Log in")).to_be_visible()
    page.goto(f"{base}/members")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


def test_sign_up_a_new_user(visit: Visit) -> None:
    page, base = visit.page, visit.base
    page.goto(f"{base}/")
    page.locator("header").get_by_role("link", name="Sign up").click()
    expect(page.get_by_role("heading", name="Create an account")).to_be_visible()
    page.get_by_label("E-Mail").fill("newcomer@example.com")
    page.get_by_label("Password").fill("a fresh passphrase")
    page.get_by_role("button", name="Sign up").click()
    expect(page).to_have_url(f"{base}/")
    expect(page.get_by_text("You are logged in as newcomer@example.com.")).to_be_visible()
    page.locator("header").get_by_role("link", name="Members area").click()
    expect(page.get_by_text("Logged in as newcomer@example.com: the JWT verified")).to_be_visible()
