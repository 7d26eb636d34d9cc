"""The gateway proxying a remote SDK MCP server (``mcp = true``): the same listing filter and
the same refusals before anything goes upstream, over real sockets end to end."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from dataclasses import dataclass

import anyio
import httpx
import pytest
from pydantic import SecretStr, ValidationError

from agentguard import CredentialOwner, CredentialScope, ServiceConfig
from agentguard.config import SecretValues, Settings
from agentguard.credentials import CredentialVault
from agentguard.gateway import Gateway, build_gateway
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock, make_user
from tests.conftest import CANARY
from tests.mcp.tool_servers import HEADERS, call_body, listed, notes_server, refused_call, session
from tests.support.servers import LoopbackServer, free_port

pytestmark = pytest.mark.anyio


@dataclass
class Proxied:
    origin: str
    gateway: Gateway
    store: MemoryStore
    keys: dict[str, str]
    ran: list[str]

    @property
    def mcp(self) -> str:
        return self.origin + "/notes/mcp"


def _settings(origin: str, upstream: str) -> Settings:
    built = Settings.model_validate(
        {
            "public_origin": origin,
            "store": {"url": "memory://"},
            "services": [
                {
                    "name": "notes",
                    "base_url": upstream,
                    "allow_insecure_http": True,
                    "mcp": True,
                    "tools": {"add_note": "write", "list_notes": "read"},
                    "max_request_bytes": 65536,
                }
            ],
        }
    )
    kek = "kek-1:" + base64.urlsafe_b64encode(os.urandom(32)).decode()
    return built.model_copy(update={"secret_values": SecretValues(kek=SecretStr(kek))})


@pytest.fixture(scope="module")
def proxied() -> Iterator[Proxied]:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    ran: list[str] = []
    upstream = notes_server(ran, guarded=False).streamable_http_app()
    with LoopbackServer(upstream, lifespan="on") as upstream_server:
        port = free_port()
        origin = f"http://127.0.0.1:{port}"
        gateway = build_gateway(_settings(origin, upstream_server.url), store=store, clock=clock)

        async def seed() -> dict[str, str]:
            vault = CredentialVault(store, gateway.settings.keyring())
            keys = {}
            for user, grants in (
                ("reader", "notes:read"),
                ("adder", "notes:read notes/add_note:write"),
            ):
                made = await make_user(store, user_id=user, grants=grants)
                await vault.put(
                    "notes", CredentialOwner.USER, user, CANARY, scope=CredentialScope.USER
                )
                keys[user] = (await gateway.guard.issuer.issue(made.id, "ws-1")).access_key.reveal()
            return keys

        keys = anyio.run(seed)
        with LoopbackServer(gateway.app, lifespan="on", port=port):
            yield Proxied(origin, gateway, store, keys, ran)


async def test_the_gateway_lists_only_the_tools_the_caller_may_call(proxied: Proxied) -> None:
    assert await listed(proxied.mcp, proxied.keys["reader"]) == ["count_notes", "list_notes"]
    assert await listed(proxied.mcp, proxied.keys["adder"]) == [
        "add_note",
        "count_notes",
        "list_notes",
    ]


async def test_the_gateway_refuses_a_write_tool_before_the_upstream(proxied: Proxied) -> None:
    before = list(proxied.ran)
    seen = await refused_call(proxied.mcp, proxied.keys["reader"], "add_note", {"text": "x"})
    challenge = seen.challenge(403)
    assert 'error="insufficient_scope"' in challenge
    assert 'scope="notes/add_note:write"' in challenge
    assert f'resource_metadata="{proxied.origin}/.well-known/oauth-protected-resource"' in challenge
    assert proxied.ran == before
    seen = await refused_call(proxied.mcp, proxied.keys["adder"], "purge", {})
    assert 'scope="notes/purge:write"' in seen.challenge(403)
    assert "purge" not in proxied.ran


async def test_the_gateway_lets_a_granted_tool_through_and_audits_it(proxied: Proxied) -> None:
    async with session(proxied.mcp, proxied.keys["adder"]) as client:
        added = await client.call_tool("add_note", {"text": "through"})
        counted = await client.call_tool("count_notes", {})
    assert not added.is_error and not counted.is_error
    assert proxied.ran[-2:] == ["add_note", "count_notes"]
    events = [entry.event() for entry in await proxied.store.read()]
    tools = [e for e in events if e["method"] == "tools/call"]
    assert [(e["decision"], e["service"], e["detail"]) for e in tools[-2:]] == [
        ("allow", "notes", {"tool": "add_note"}),
        ("allow", "notes", {"tool": "count_notes"}),
    ]


async def test_the_gateway_refuses_a_batch_and_an_oversized_body(proxied: Proxied) -> None:
    before = list(proxied.ran)
    auth = {**HEADERS, "authorization": f"Bearer {proxied.keys['reader']}"}
    async with httpx.AsyncClient(timeout=10) as http:
        batch = await http.post(
            proxied.mcp, content=call_body(("list_notes", {}), ("add_note", {"t": 1})), headers=auth
        )
        big = await http.post(proxied.mcp, content=b"[" + b" " * 70000 + b"]", headers=auth)
        well_known = await http.get(proxied.origin + "/.well-known/oauth-authorization-server")
    assert batch.status_code == 403
    assert batch.json()["scope"] == "notes/add_note:write"
    assert big.status_code == 413
    # RFC 8414: the gateway is the authorization server of its keys; clients discover it here
    assert well_known.status_code == 200
    assert well_known.json()["issuer"] == proxied.origin
    assert well_known.json()["token_endpoint"] == proxied.origin + "/oauth/token"
    assert proxied.ran == before


def test_an_mcp_service_is_configured_with_its_tools() -> None:
    service = ServiceConfig.model_validate(
        {"name": "notes", "base_url": "https://mcp.example", "mcp": True,
         "tools": {"add_note": "write"}}
    )  # fmt: skip
    needed = service.permission_checker().requirement("POST", "/mcp")
    assert needed is not None and (needed.service, needed.level.label) == ("notes", "read")
    with pytest.raises(ValidationError, match="only read with mcp = true"):
        ServiceConfig.model_validate(
            {"name": "notes", "base_url": "https://mcp.example", "tools": {"add_note": "write"}}
        )
    with pytest.raises(ValidationError, match="needs max_request_bytes"):
        ServiceConfig(
            name="notes", base_url="https://mcp.example", mcp=True, max_request_bytes=None
        )
    with pytest.raises(ValidationError, match="needs read or write"):
        ServiceConfig.model_validate(
            {
                "name": "notes",
                "base_url": "https://mcp.example",
                "mcp": True,
                "tools": {"x": "none"},
            }
        )
