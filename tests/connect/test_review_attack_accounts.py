"""Regressions of the attack review of connected accounts (findings 4 and 8), over real sockets:
the gateway (with a FakeClock: no sleeping), the fake vendor behind a tap on its token
endpoint, and an upstream API that answers what the test tells it to.

4. Inside the refresh window, every agent call asked the vendor's token endpoint again, also
   after a 429 (``Retry-After`` ignored) or a 503: 20 calls, 20 token requests with the one
   client registration every user shares. Now a failed renewal backs off per (service, user).
8. The echo scan of a connected call looked only for the access token: a vendor response
   showing the gateway's OAuth client secret or the user's refresh token reached the agent.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from agentguard import Guard
from agentguard.config import load_settings
from agentguard.gateway import Gateway, build_gateway
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock, make_user
from agentguard.testing._oauth_vendor import FakeOAuthVendor
from tests.connect.gateway_support import CRM_SERVICE
from tests.support.servers import LoopbackServer, free_port

TOKEN_TTL = 600  # the vendor's access tokens; renewed from 60 s before expiry (refresh_ahead)
IN_WINDOW = TOKEN_TTL - 40

SETTINGS = (
    """\
public_origin = "{origin}"

[store]
url = "memory://"
"""
    + CRM_SERVICE
)

Scope = dict[str, Any]
Message = MutableMapping[str, Any]


@dataclass
class TokenTap:
    """ASGI wrapper of the fake vendor: counts token requests, keeps the vendor's token
    answers, and can answer the token endpoint itself (``refuse``: a status, and the
    ``Retry-After`` to send with it)."""

    vendor: FakeOAuthVendor
    requests: int = 0
    answers: list[dict[str, Any]] = field(default_factory=list)
    refuse: tuple[int, str | None] | None = None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].endswith("/token"):
            await self.vendor(scope, receive, send)
            return
        self.requests += 1
        if self.refuse is not None:
            status, retry_after = self.refuse
            headers = [(b"content-type", b"text/plain")]
            if retry_after is not None:
                headers.append((b"retry-after", retry_after.encode()))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": b"come back later"})
            return
        body = bytearray()

        async def tap(message: Message) -> None:
            if message["type"] == "http.response.body":
                body.extend(message.get("body", b""))
                if not message.get("more_body", False):  # kept before the client can read it
                    answer = json.loads(bytes(body))
                    if isinstance(answer, dict) and "access_token" in answer:
                        self.answers.append(answer)
            await send(message)

        await self.vendor(scope, receive, tap)


@dataclass
class Upstream:
    """The service's API: answers ``{"value": answer()}`` and keeps the bearer tokens sent."""

    answer: Callable[[], str] = lambda: "hello"
    bearers: list[str] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        headers = dict(scope["headers"])
        self.bearers.append(headers.get(b"authorization", b"").decode().removeprefix("Bearer "))
        body = json.dumps({"value": self.answer()}).encode()
        start = {"type": "http.response.start", "status": 200}
        await send({**start, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})


@dataclass
class World:
    gateway: Gateway
    clock: FakeClock
    vendor: FakeOAuthVendor
    tap: TokenTap
    upstream: Upstream
    origin: str
    agent_key: str

    def call(self) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.agent_key}"}
        return httpx.get(f"{self.origin}/crm/contacts", headers=headers, timeout=10)

    def connect(self, ticket: str) -> None:
        """Alice connects her vendor account in a browser, with the operator's link."""
        with httpx.Client(timeout=10) as browser:
            page = browser.get(f"{self.origin}/connect/crm", params={"ticket": ticket})
            assert page.status_code == 200, page.text
            started = browser.post(
                f"{self.origin}/connect/crm",
                data={"ticket": ticket, "action": "connect"},
                headers={"Origin": self.origin},
            )
            assert started.status_code == 303, started.text
            consented = browser.get(started.headers["location"])
            assert consented.status_code == 302, consented.text
            back = browser.get(consented.headers["location"])
            assert back.status_code == 200, back.text
        assert len(self.tap.answers) == 1

    @property
    def refresh_token(self) -> str:
        """The refresh token the vendor handed out last."""
        value = [a["refresh_token"] for a in self.tap.answers if "refresh_token" in a][-1]
        assert isinstance(value, str)
        return value


async def _seed(store: MemoryStore) -> str:
    await make_user(store, user_id="alice", grants="crm:write")
    issued = await Guard(store).issuer.issue("alice", "ws-1")
    return issued.access_key.reveal()


@pytest.fixture
def world(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> Iterator[World]:
    caplog.set_level(logging.WARNING, logger="httpx")  # URLs carry the ticket and the state
    vendor = FakeOAuthVendor(users=("alice-at-vendor",), token_ttl=TOKEN_TTL)
    vendor.auto_approve = "alice-at-vendor"
    tap = TokenTap(vendor)
    upstream = Upstream()
    with LoopbackServer(tap) as vendor_server, LoopbackServer(upstream) as api_server:
        vendor.bind(vendor_server.url)
        port = free_port()
        origin = f"http://127.0.0.1:{port}"
        path = tmp_path / "agentguard.toml"
        path.write_text(
            SETTINGS.format(
                origin=origin,
                api=api_server.url,
                vendor=vendor.issuer,
                client_id=vendor.client_id,
            )
        )
        environ = {
            "AGENTGUARD_KEK": "kek-1:" + base64.urlsafe_b64encode(os.urandom(32)).decode(),
            "AGENTGUARD_OAUTH_CRM_CLIENT_SECRET": vendor.client_secret.reveal(),
        }
        settings = load_settings(path, environ=environ)
        store = MemoryStore()
        key = anyio.run(_seed, store)
        clock = FakeClock(datetime.now(timezone.utc))  # after the key's issue: it is valid
        gateway = build_gateway(settings, store=store, clock=clock)
        assert gateway.connect is not None
        flows = gateway.connect.flows
        ticket, _ = anyio.run(lambda: flows.issue_ticket("crm", "alice", by="ops-anna"))
        with LoopbackServer(gateway.app, lifespan="on", port=port):
            world = World(gateway, clock, vendor, tap, upstream, origin, key)
            world.connect(ticket.reveal())
            yield world


@pytest.mark.parametrize("status", [429, 503])
def test_a_failing_token_endpoint_is_not_asked_again_on_every_call(
    world: World, status: int
) -> None:
    first = world.tap.answers[0]["access_token"]
    world.clock.advance(IN_WINDOW)  # due for renewal, still valid
    world.tap.refuse = (status, None)
    before = world.tap.requests
    answers = [world.call().status_code for _ in range(20)]
    assert answers == [200] * 20  # the current token still works
    assert world.tap.requests - before == 1  # the vendor was asked once, not 20 times
    assert world.upstream.bearers[-20:] == [first] * 20
    world.clock.advance(1)  # the first back-off (1 s) has passed: asked once more
    assert [world.call().status_code for _ in range(5)] == [200] * 5
    assert world.tap.requests - before == 2
    world.clock.advance(1)  # the second back-off is 2 s: not yet
    assert world.call().status_code == 200
    assert world.tap.requests - before == 2
    world.tap.refuse = None  # the vendor is back
    world.clock.advance(1)
    assert world.call().status_code == 200
    assert world.tap.requests - before == 3
    renewed = world.tap.answers[-1]["access_token"]
    assert renewed != first and world.upstream.bearers[-1] == renewed
    world.tap.refuse = (status, None)  # a renewal that worked ended the back-off
    assert world.call().status_code == 200
    assert world.tap.requests - before == 3  # not due again: the new token is fresh


def test_retry_after_is_honoured_and_an_expired_token_is_refused_with_it(world: World) -> None:
    world.clock.advance(IN_WINDOW)
    world.tap.refuse = (429, "30")
    before = world.tap.requests
    assert world.call().status_code == 200
    world.clock.advance(10)  # past the 1 s back-off, inside the vendor's 30 s
    assert world.call().status_code == 200
    assert world.tap.requests - before == 1
    world.clock.advance(31)  # the token has expired; the vendor's 30 s have passed
    refused = world.call()
    assert world.tap.requests - before == 2
    assert refused.status_code == 502
    assert refused.json()["reason"] == "vendor_unavailable"
    assert refused.headers["retry-after"] == "30"
    world.clock.advance(5)
    again = world.call()  # backing off: answered at once, the vendor not asked
    assert (again.status_code, again.headers["retry-after"]) == (502, "25")
    assert world.tap.requests - before == 2


def test_a_retry_after_date_is_honoured(world: World) -> None:
    world.clock.advance(TOKEN_TTL + 1)  # expired
    later = world.clock.now().timestamp() + 120
    stamp = datetime.fromtimestamp(later, timezone.utc).strftime("%a, %d %b %Y %H:%M:%S GMT")
    world.tap.refuse = (503, stamp)
    refused = world.call()
    assert refused.status_code == 502
    assert 119 <= int(refused.headers["retry-after"]) <= 121
    assert world.tap.requests == 2  # the connect's code exchange, and this one


@pytest.mark.parametrize("echoed", ["client_secret", "refresh_token", "rotated_refresh_token"])
def test_every_secret_of_a_connected_call_is_withheld(world: World, echoed: str) -> None:
    client_secret = world.vendor.client_secret.reveal()
    if echoed == "rotated_refresh_token":
        world.clock.advance(IN_WINDOW)  # this call renews: the vendor rotates the refresh token
        world.upstream.answer = lambda: world.refresh_token
    elif echoed == "refresh_token":
        world.upstream.answer = lambda: world.refresh_token
    else:
        world.upstream.answer = lambda: client_secret
    called = world.call()
    assert called.status_code == 502
    assert called.json()["reason"] == "secret_echo_blocked"
    secret = client_secret if echoed == "client_secret" else world.refresh_token
    assert secret not in called.text
    if echoed == "rotated_refresh_token":
        assert len(world.tap.answers) == 2  # renewed during the call


def test_an_ordinary_answer_still_reaches_the_agent(world: World) -> None:
    called = world.call()
    assert (called.status_code, called.json()) == (200, {"value": "hello"})
    assert re.fullmatch(r"[\x21-\x7e]+", world.upstream.bearers[-1])
