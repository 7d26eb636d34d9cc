"""Helpers for the vendor client and fake vendor tests: PKCE pairs, a scripted vendor behind
``httpx.MockTransport`` with its configurations and metadata, a consent form read like a browser
reads it, and a fake vendor served on loopback."""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qsl

import httpx

from agentguard._secret import Secret
from agentguard.connect import OAuthClientConfig
from agentguard.connect._vendor import VendorClient
from agentguard.testing import FakeOAuthVendor
from tests.support.servers import LoopbackServer

REDIRECT_URI = "http://gateway.test/connect/crm/callback"
AUTH = "https://auth.crm.example"
CLIENT_SECRET = "cs-" + secrets.token_urlsafe(18)
ACCESS = "vat_" + secrets.token_urlsafe(20)
REFRESH = "vrt_" + secrets.token_urlsafe(20)


def pkce() -> tuple[str, str]:
    """A fresh (verifier, S256 challenge) pair."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).decode().rstrip("=")


def config(**changes: Any) -> OAuthClientConfig:
    """The crm client's configuration with explicit endpoints (a ``None`` change drops one)."""
    fields: dict[str, Any] = {
        "client_id": "agentguard-crm",
        "authorization_endpoint": AUTH + "/authorize",
        "token_endpoint": AUTH + "/token",
        "revocation_endpoint": AUTH + "/revoke",
        "scopes": ("contacts.read", "contacts.write"),
    }
    fields.update(changes)
    return OAuthClientConfig(**{k: v for k, v in fields.items() if v is not None})


def discovery_config(**changes: Any) -> OAuthClientConfig:
    """The crm client's configuration by RFC 8414 discovery from :data:`AUTH`."""
    fields: dict[str, Any] = {"issuer": AUTH, **changes}
    return config(
        authorization_endpoint=None, token_endpoint=None, revocation_endpoint=None, **fields
    )


def token_answer(**changes: Any) -> httpx.Response:
    """A good token response, with ``changes``."""
    document = {
        "access_token": ACCESS,
        "token_type": "Bearer",
        "expires_in": 600,
        "refresh_token": REFRESH,
    }
    document.update(changes)
    return httpx.Response(200, json=document)


def metadata(issuer: str = AUTH, **changes: Any) -> dict[str, Any]:
    """An RFC 8414 document for :data:`AUTH` (a ``None`` change removes the member)."""
    document: dict[str, Any] = {
        "issuer": issuer,
        "authorization_endpoint": AUTH + "/authorize",
        "token_endpoint": AUTH + "/token",
        "revocation_endpoint": AUTH + "/revoke",
        "code_challenge_methods_supported": ["S256"],
    }
    for name, value in changes.items():
        if value is None:
            document.pop(name, None)
        else:
            document[name] = value
    return document


class Vendor:
    """A scripted vendor: ``answer`` (sync or async) per request; every request recorded."""

    def __init__(self, answer: Callable[[httpx.Request], Any] | None = None) -> None:
        self.answer = answer or (lambda request: token_answer())
        self.requests: list[httpx.Request] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        response = self.answer(request)
        if not isinstance(response, httpx.Response):
            response = await response
        assert isinstance(response, httpx.Response)
        return response

    def form(self, index: int = -1) -> dict[str, str]:
        """The form of the ``index``-th request."""
        return dict(parse_qsl(self.requests[index].content.decode()))

    def client(self, oauth: OAuthClientConfig | None = None, **options: Any) -> VendorClient:
        """A :class:`VendorClient` whose every request this vendor answers."""
        options.setdefault("client_secret", Secret(CLIENT_SECRET))
        return VendorClient(
            "crm", oauth or config(), transport=httpx.MockTransport(self), **options
        )


def discovering(document: dict[str, Any] | None = None, status: int = 200) -> Vendor:
    """A vendor serving ``document`` (default :func:`metadata`) and good token answers."""

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/.well-known/"):
            return httpx.Response(status, json=document or metadata())
        return token_answer()

    return Vendor(answer)


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


class Session:
    """A test's view of one fake vendor, in process."""

    def __init__(self, vendor: FakeOAuthVendor, http: httpx.AsyncClient) -> None:
        self.vendor = vendor
        self.http = http

    def authorize_params(self, **changes: str | None) -> dict[str, str]:
        verifier, challenge = pkce()
        self.verifier = verifier
        params: dict[str, str | None] = {
            "response_type": "code",
            "client_id": self.vendor.client_id,
            "redirect_uri": REDIRECT_URI,
            "state": "st-" + secrets.token_hex(4),
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "scope": "contacts.read",
        }
        params.update(changes)
        return {k: v for k, v in params.items() if v is not None}

    async def code(self, login: str = "alice", **changes: str | None) -> str:
        """Run the consent page as a browser does; the code it redirects with."""
        page = await self.http.get("/authorize", params=self.authorize_params(**changes))
        assert page.status_code == 200, page.text
        form = ConsentForm(page.text)
        answer = await self.http.post(
            form.action, data={**form.hidden, "login": login, "decision": "allow"}
        )
        assert answer.status_code == 302, answer.text
        return query_of(answer.headers["location"])["code"]

    def basic(self, secret: str | None = None) -> dict[str, str]:
        value = secret if secret is not None else self.vendor.client_secret.reveal()
        pair = f"{self.vendor.client_id}:{value}".encode()
        return {"authorization": "Basic " + base64.b64encode(pair).decode()}

    async def token(
        self, form: dict[str, str], headers: dict[str, str] | None = None
    ) -> httpx.Response:
        return await self.http.post(
            "/token", data=form, headers=self.basic() if headers is None else headers
        )

    async def exchange(self, code: str, **changes: str) -> httpx.Response:
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "code_verifier": self.verifier,
        }
        form.update(changes)
        return await self.token(form)

    async def tokens(self, login: str = "alice") -> dict[str, Any]:
        answer = await self.exchange(await self.code(login))
        assert answer.status_code == 200, answer.text
        document: dict[str, Any] = answer.json()
        return document

    async def refresh(self, refresh_token: str) -> httpx.Response:
        return await self.token({"grant_type": "refresh_token", "refresh_token": refresh_token})

    async def api(self, access_token: str) -> httpx.Response:
        return await self.http.get(
            "/api/contacts", headers={"authorization": f"Bearer {access_token}"}
        )
