"""Helpers for the vendor client and fake vendor tests: PKCE pairs, a consent form read like a
browser reads it, and a fake vendor served on loopback."""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from html.parser import HTMLParser
from typing import Any

import httpx

from agentguard.testing import FakeOAuthVendor
from tests.support.servers import LoopbackServer

REDIRECT_URI = "http://gateway.test/connect/crm/callback"


def pkce() -> tuple[str, str]:
    """A fresh (verifier, S256 challenge) pair."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).decode().rstrip("=")


class ConsentForm(HTMLParser):
    """The fields, options and buttons of the consent page's form, as a browser sees them."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.action = ""
        self.hidden: dict[str, str] = {}
        self.options: list[str] = []
        self.buttons: dict[str, tuple[str, str]] = {}  # id -> (name, value)
        self.scripts = 0
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {name: value or "" for name, value in attrs}
        if tag == "form":
            self.action = found.get("action", "")
        elif tag == "input" and found.get("type") == "hidden":
            self.hidden[found["name"]] = found.get("value", "")
        elif tag == "option":
            self.options.append(found.get("value", ""))
        elif tag == "button":
            self.buttons[found.get("id", "")] = (found.get("name", ""), found.get("value", ""))
        elif tag == "script":
            self.scripts += 1


@contextmanager
def served_vendor(**options: Any) -> Iterator[FakeOAuthVendor]:
    """A :class:`FakeOAuthVendor` on a loopback port, bound to its URL (+ ``path``)."""
    path = options.pop("path", "")
    vendor = FakeOAuthVendor(**options)
    with LoopbackServer(vendor) as server:
        vendor.bind(server.url + path)
        yield vendor


def query_of(location: str) -> dict[str, str]:
    """The query parameters of a redirect's ``Location``."""
    return dict(httpx.URL(location).params)


async def approve(url: str, *, login: str = "alice", decision: str = "allow") -> dict[str, str]:
    """Open the consent page at ``url``, submit it as a browser would; the redirect's query."""
    async with httpx.AsyncClient() as browser:
        page = await browser.get(url)
        assert page.status_code == 200, page.text
        form = ConsentForm(page.text)
        name, value = form.buttons[decision]
        fields = {**form.hidden, "login": login, name: value}
        target = httpx.URL(url).join(form.action)
        answer = await browser.post(target, data=fields)
    assert answer.status_code == 302, answer.text
    return query_of(answer.headers["location"])
