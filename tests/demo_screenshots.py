"""Screenshots of the demo's three main pages for the docs: `bin/screenshots`.

Debian's Chromium through Playwright, like tests/test_demo_browser.py: the home page
(signed out), the login page and the members area (signed in), as PNG in docs/img/.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

from ory_wsgi.demo import DEMO_EMAIL, DEMO_PASSWORD, Demo

ROOT = Path(__file__).resolve().parent.parent


def port() -> int:
    """4000 as in the README when it is free, so the pictures show the documented URL."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", 4000))
        except OSError:
            sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main(target: Path) -> int:
    target.mkdir(parents=True, exist_ok=True)
    demo = Demo(port=port())
    demo.serve_in_background()
    base = demo.public_url
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path="/usr/bin/chromium", headless=True, args=["--no-sandbox"]
            )
            page = browser.new_page(viewport={"width": 1000, "height": 640})
            page.goto(f"{base}/")
            page.screenshot(path=target / "demo-home.png", full_page=True)
            page.goto(f"{base}/members")
            page.wait_for_selector("text=Sign in")
            page.screenshot(path=target / "demo-login.png", full_page=True)
            page.get_by_label("ID").fill(DEMO_EMAIL)
            page.get_by_label("Password").fill(DEMO_PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(f"{base}/members")
            page.screenshot(path=target / "demo-members.png", full_page=True)
            browser.close()
    finally:
        demo.close()
    print(f"wrote demo-home.png, demo-login.png, demo-members.png to {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "img"))
