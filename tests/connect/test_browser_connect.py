"""The connect flow in a real browser: Debian's Chromium, headless, driven by Playwright.

The human opens the operator's one-time link, presses Connect, signs in at the (fake) vendor
and allows; the page says the account is connected; the agent, with its unchanged placeholder
key, then acts with that user's own vendor account. A second test takes the vendor's redirect
(code and state) from one browser and replays it in another: refused, nothing connected. Run on
every store the gateway tests use (memory, SQLite, PostgreSQL).

Chromium comes from the system (``apt-get install chromium``; ``.ci/run`` installs it):
Playwright's own browser download does not work on this project's machines.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, Route, sync_playwright
from playwright.sync_api import Error as PlaywrightError

from tests.backends.services import chromium_path
from tests.connect.gateway_support import Running, running

__all__ = ["running"]  # the fixture, imported for pytest

#: Flags for a root, screenless machine with a closed network (see the machine notes).
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 20_000


@pytest.fixture
def browser() -> Iterator[Browser]:
    executable = chromium_path()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS, timeout=TIMEOUT_MS
        )
        try:
            yield launched
        finally:
            launched.close()


def _consent(page: Page, link: str, user: str, vendor_user: str) -> None:
    """Open ``user``'s link, press Connect, sign in at the vendor as ``vendor_user``, allow."""
    page.goto(link)
    assert page.locator("h1").inner_text() == "Connect your crm account"
    named = page.locator("#user").inner_text()  # whose link it is, before anything is used
    assert f"connects a crm account to agentguard user {user}." in named
    assert f"Continue only if you are {user}" in named
    page.click("#connect")
    page.wait_for_selector("#allow")  # the vendor's consent page
    page.select_option("#login", vendor_user)
    page.click("#allow")


def test_a_human_connects_in_the_browser_and_the_agent_uses_that_account(
    running: Running, browser: Browser
) -> None:
    alice = running.agents["alice"]
    assert alice.call(running.origin).status_code == 403  # not connected yet

    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    _consent(page, running.link("alice"), "alice", "alice-at-vendor")
    page.wait_for_url(f"{running.origin}/connect/crm/callback?*")
    assert "connected" in page.locator("h1").inner_text().lower()
    assert "connected to agentguard user alice" in page.locator("main").inner_text()
    for secret_marker in ("access_token", "refresh_token", "code=", "state="):
        assert secret_marker not in page.content()
    cookies = [c for c in context.cookies() if c["name"].startswith("agentguard_connect")]
    assert cookies == [], "the browser-binding cookie is cleared once the flow is done"
    context.close()

    answer = alice.call(running.origin)
    assert answer.status_code == 200, answer.text
    assert answer.json()["vendor_user"] == "alice-at-vendor"
    assert running.vendor.api_calls["alice-at-vendor"] == 1
    assert [e["actor"]["user"] for e in running.events("connection.connect")] == ["alice"]

    bob = running.agents["bob"]
    refused = bob.call(running.origin)
    assert (refused.status_code, refused.json()["error"]) == (403, "connection_required")
    assert running.vendor.api_calls["alice-at-vendor"] == 1  # bob never got alice's token


def test_the_vendor_redirect_replayed_in_another_browser_connects_nothing(
    running: Running, browser: Browser
) -> None:
    started = browser.new_context()
    page = started.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    captured: list[str] = []

    def intercept(route: Route) -> None:
        # the vendor's answer to "Allow" is a redirect to our callback: take its Location and
        # stop there, as a thief reading the redirect (a log, a referrer, malware) would
        if route.request.method != "POST":
            route.continue_()
            return
        answer = route.fetch(max_redirects=0)
        captured.append(answer.headers["location"])
        route.abort()

    page.route(f"{running.vendor.issuer}/authorize*", intercept)
    page.goto(running.link("alice"))
    page.click("#connect")
    page.wait_for_selector("#allow")
    page.select_option("#login", "bob-at-vendor")
    with contextlib.suppress(PlaywrightError):  # the aborted navigation is the point
        page.click("#allow", no_wait_after=True)
    deadline_ms = TIMEOUT_MS
    while not captured and deadline_ms > 0:
        page.wait_for_timeout(100)
        deadline_ms -= 100
    assert len(captured) == 1
    assert captured[0].startswith(f"{running.origin}/connect/crm/callback?")
    started.close()

    other = browser.new_context()  # no browser-binding cookie: another person's browser
    thief = other.new_page()
    thief.set_default_timeout(TIMEOUT_MS)
    response = thief.goto(captured[0])
    assert response is not None and response.status == 403
    assert "browser that started" in thief.content()
    other.close()

    refused = running.agents["alice"].call(running.origin)
    assert (refused.status_code, refused.json()["error"]) == (403, "connection_required")
    assert running.events("connection.connect") == []
    assert [e["reason"] for e in running.events("connection.refuse")] == ["connect_refused"]
