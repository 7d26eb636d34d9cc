"""The standalone gateway with a connected service, served as ``agentguard serve`` serves it
(both listeners in one event loop) over real sockets, with a FakeOAuthVendor on loopback; shared
by the HTTP-level and the browser tests of the connect flow."""

from __future__ import annotations

import base64
import logging
import os
import re
import socket
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import uvicorn

from agentguard._clock import SystemClock
from agentguard.approvals._operators import issue_operator_token
from agentguard.cli._serve_operator import OperatorListener, bind_operator_socket
from agentguard.config import load_settings
from agentguard.gateway import Gateway, build_gateway
from agentguard.storage import MemoryStore
from agentguard.storage._urls import open_store
from agentguard.testing import make_user
from agentguard.testing._oauth_vendor import FakeOAuthVendor
from tests.support.servers import LoopbackServer, bound_socket

POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"

CRM_SERVICE = """
[[services]]
name = "crm"
base_url = "{api}"
allow_insecure_http = true
credentials = "connected"

[services.oauth]
client_id = "{client_id}"
authorization_endpoint = "{vendor}/authorize"
token_endpoint = "{vendor}/token"
revocation_endpoint = "{vendor}/revoke"
scopes = ["contacts.read"]
allow_insecure_http = true
"""
"""A connected ``crm`` service at a FakeOAuthVendor: format with ``api``, ``client_id`` and
``vendor`` (its issuer)."""

SETTINGS = (
    """\
public_origin = "{origin}"

[store]
url = "{store}"
"""
    + CRM_SERVICE
    + """
[[services]]
name = "billing"
base_url = "https://billing.example"

[connect]
ticket_ttl = 300
"""
)


@dataclass
class Agent:
    user_id: str
    key: str

    def call(self, origin: str, path: str = "/crm/contacts") -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.key}"}
        return httpx.get(origin + path, headers=headers, timeout=10)


@dataclass
class Running:
    gateway: Gateway
    vendor: FakeOAuthVendor
    origin: str
    operator: str  # the operator listener's URL
    operator_token: str
    agents: dict[str, Agent]
    store_url: str

    def op(self, method: str, path: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.operator_token}"}
        return httpx.request(method, self.operator + path, headers=headers, timeout=10)

    def link(self, user_id: str) -> str:
        made = self.op("POST", f"/connections/crm/{user_id}/link")
        assert made.status_code == 201, made.text
        url: str = made.json()["url"]
        return url

    def connect_in_browser(self, url: str, vendor_user: str) -> httpx.Response:
        """Open the link, confirm, consent at the vendor, come back: the callback's answer."""
        self.vendor.auto_approve = vendor_user
        with httpx.Client(timeout=10) as browser:
            page = browser.get(url)
            assert page.status_code == 200, page.text
            ticket = re.search(r'name="ticket" value="([^"]+)"', page.text)
            assert ticket is not None and 'value="connect"' in page.text
            started = browser.post(
                f"{self.origin}/connect/crm",
                data={"ticket": ticket.group(1), "action": "connect"},
                headers={"Origin": self.origin},
            )
            assert started.status_code == 303, started.text
            assert started.headers["location"].startswith(self.vendor.issuer + "/authorize?")
            consented = browser.get(started.headers["location"])
            assert consented.status_code == 302, consented.text
            callback = consented.headers["location"]
            assert callback.startswith(f"{self.origin}/connect/crm/callback?")
            return browser.get(callback)

    def events(self, action: str) -> list[dict[str, Any]]:
        """The audit events of ``action``, read from the store (another instance of it)."""

        async def read() -> list[dict[str, Any]]:
            memory = self.store_url == "memory://"  # the gateway's own: the only one there is
            store = self.gateway.store if memory else open_store(self.store_url)
            try:
                entries = [entry.event() for entry in await store.read()]
            finally:
                if not memory:
                    await store.close()
            return [event for event in entries if event["action"] == action]

        # in a thread of its own: the caller may be inside an event loop (Playwright's)
        with ThreadPoolExecutor(max_workers=1) as worker:
            return worker.submit(anyio.run, read).result(timeout=30)


def _postgres_url() -> str:
    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=1).close()
    except OSError:
        pytest.skip("no PostgreSQL on 127.0.0.1:5432")
    return f"{POSTGRES}?schema=connect_{uuid.uuid4().hex[:10]}"


async def _drop_schema(url: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(POSTGRES)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{url.rsplit("=", 1)[1]}" CASCADE')
    finally:
        await connection.close()


async def _seed(store: Any) -> tuple[str, dict[str, Agent]]:
    initialize = getattr(store, "initialize", None)
    if initialize is not None:
        await initialize()
    for user in ("alice", "bob", "carol"):
        await make_user(store, user_id=user, grants="crm:write")
    from agentguard import Guard

    guard = Guard(store)
    agents = {}
    for user in ("alice", "bob"):
        issued = await guard.issuer.issue(user, "ws-1")
        agents[user] = Agent(user, issued.access_key.reveal())
    token, _ = await issue_operator_token(store, "ops-anna", clock=SystemClock())
    return token.reveal(), agents


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def running(
    request: pytest.FixtureRequest, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> Iterator[Running]:
    # the test's browser and the gateway's vendor client log URLs that carry the connect
    # link's ticket and the OAuth state: keep those records from being made at all
    caplog.set_level(logging.WARNING, logger="httpx")
    store_url = {
        "memory": "memory://",
        "sqlite": f"sqlite:///{tmp_path / 'agentguard.db'}",
        "postgresql": _postgres_url() if request.param == "postgresql" else "",
    }[request.param]
    vendor = FakeOAuthVendor(users=("alice-at-vendor", "bob-at-vendor"))
    with LoopbackServer(vendor) as vendor_server:
        vendor.bind(vendor_server.url)
        public = bound_socket()  # held from now on: the origin names it before the gateway runs
        port = public.getsockname()[1]
        origin = f"http://127.0.0.1:{port}"
        text = SETTINGS.format(
            origin=origin,
            store=store_url,
            api=vendor.api_url,
            vendor=vendor.issuer,
            client_id=vendor.client_id,
        )
        path = tmp_path / "agentguard.toml"
        path.write_text(text)
        environ = {
            "AGENTGUARD_KEK": "kek-1:" + base64.urlsafe_b64encode(os.urandom(32)).decode(),
            "AGENTGUARD_OAUTH_CRM_CLIENT_SECRET": vendor.client_secret.reveal(),
        }
        settings = load_settings(path, environ=environ)
        if request.param == "memory":
            memory = MemoryStore()
            token, agents = anyio.run(_seed, memory)
            gateway = build_gateway(settings, store=memory)
        else:
            seeding = open_store(store_url)

            async def seed() -> tuple[str, dict[str, Agent]]:
                try:
                    return await _seed(seeding)
                finally:
                    await seeding.close()

            token, agents = anyio.run(seed)
            gateway = build_gateway(settings)
        assert gateway.operator_app is not None and gateway.connect is not None
        sock = bind_operator_socket("127.0.0.1", 0)
        config = uvicorn.Config(
            gateway.operator_app, lifespan="off", log_level="warning", log_config=None
        )
        listener = OperatorListener(uvicorn, gateway.operator_app, sock, config)
        server = LoopbackServer(listener.wrap(gateway.app), lifespan="on", sock=public)
        listener.follow(server.server)
        try:
            with server:
                host, operator_port = listener.address
                yield Running(
                    gateway,
                    vendor,
                    origin,
                    f"http://{host}:{operator_port}",
                    token,
                    agents,
                    store_url,
                )
        finally:
            sock.close()
            if request.param == "postgresql":
                anyio.run(_drop_schema, store_url)
