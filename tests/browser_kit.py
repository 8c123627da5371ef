"""Shared pieces of the browser tests: Debian's chromium driven by Playwright (no browser download), a page that
records script errors, and logging in through the real form."""

from __future__ import annotations

import shutil

import pytest
from conftest import TEST_PASSWORD

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed "
                                    "(make test installs it when run as root: apt-get install chromium)")
PANEL = {"width": 800, "height": 480}  # the kiosk touchscreen
DESK = {"width": 1280, "height": 800}


@pytest.fixture
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        yield browser
        browser.close()


def new_page(browser, viewport=PANEL, javascript: bool = True):
    """(context, page, errors): ``errors`` collects uncaught script errors and console errors."""
    context = browser.new_context(viewport=viewport, accept_downloads=True, java_script_enabled=javascript)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" and "favicon" not in msg.text
            and "404" not in msg.text else None)
    page.set_default_timeout(15_000)
    return context, page, errors


def login(page, base: str, username: str) -> None:
    page.goto(base + "/login")
    page.fill('input[name="username"]', username)
    page.fill('input[name="password"]', TEST_PASSWORD)
    page.click('button[type="submit"]')
    page.wait_for_load_state()


def assert_fits_panel(page, path: str) -> None:
    """The page shown does not scroll sideways and every visible button is fingertip-sized (>= 40 px tall)."""
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 1, f"{path} scrolls sideways by {overflow}px"
    small = page.evaluate("""() => [...document.querySelectorAll('main .btn, main button')]
        .filter(b => b.offsetParent !== null)
        .filter(b => b.getBoundingClientRect().height < 40).map(b => b.textContent.trim())""")
    assert small == [], f"{path}: buttons smaller than a fingertip: {small}"
