"""The ``mcp`` SDK's own streamable HTTP client, signed and renewed by ``AgentAuth``.

The SDK's client is built on ``httpx2`` and refuses an ``auth`` that is not an ``httpx2.Auth``;
``AgentAuth`` is one, so DPoP proofs and renewals happen inside the SDK's own requests, against
``AgentGuardMCP`` (unchanged) over a real socket.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import httpx
import httpx2
import pytest
from mcp.client.auth.utils import extract_scope_from_www_auth
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import ProtectedResourceMetadata as SDKResourceMetadata

from agentguard.client import AgentAuth
from agentguard.dpop import DPoPKey
from tests.mcp.dpop_servers import (  # noqa: F401 - fixtures
    ACCESS_TTL,
    GuardedMCP,
    mcp_fixture,
    quiet_loggers_fixture,
    serve,
    stateless_mcp_fixture,
)

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("quiet_loggers")]


@asynccontextmanager
async def sdk_session(
    url: str, auth: AgentAuth, sent: list[httpx2.Request] | None = None
) -> AsyncIterator[ClientSession]:
    async def record(request: httpx2.Request) -> None:
        if sent is not None:
            sent.append(request)

    async with (
        httpx2.AsyncClient(auth=auth, timeout=10, event_hooks={"request": [record]}) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def _payload(proof: str) -> dict[str, object]:
    part = proof.split(".")[1]
    decoded: dict[str, object] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


def _texts(result: object) -> str:
    return " ".join(getattr(block, "text", "") for block in getattr(result, "content", []))


async def test_sdk_client_calls_tools_with_a_dpop_bound_key(mcp: GuardedMCP) -> None:
    dpop_key = DPoPKey.generate()
    keys = await mcp.issue(dpop_key)
    auth = mcp.auth(keys, dpop_key)
    sent: list[httpx2.Request] = []
    async with sdk_session(mcp.resource, auth, sent) as session:
        tools = await session.list_tools()
        result = await session.call_tool("add_note", {"text": "signed by AgentAuth"})
    assert sorted(tool.name for tool in tools.tools) == ["add_note", "list_notes"]
    assert not result.is_error, _texts(result)
    assert sent, "the SDK sent nothing through its client"
    for request in sent:  # every SDK request carried the key and a proof of exactly it
        assert request.headers["authorization"] == f"DPoP {keys.access_key.reveal()}"
        claims = _payload(request.headers["dpop"])
        assert claims["htm"] == request.method
        assert claims["htu"] == str(request.url).split("?")[0]
    assert auth.refreshes == 0
    assert 401 not in mcp.resource_statuses[-len(sent) :]


async def _renew_three_times(mcp: GuardedMCP) -> None:
    dpop_key = DPoPKey.generate()
    keys = await mcp.issue(dpop_key)
    auth = mcp.auth(keys, dpop_key)
    calls_before = mcp.token_calls
    async with sdk_session(mcp.resource, auth) as session:
        first = await session.call_tool("add_note", {"text": "before"})
        seen = [auth.credentials.access_key.reveal()]
        for round_ in range(3):  # 85 % of a key's life each time: renewed before expiry
            mcp.clock.advance(ACCESS_TTL * 0.85)
            result = await session.call_tool("add_note", {"text": f"after {round_}"})
            assert not result.is_error, _texts(result)
            seen.append(auth.credentials.access_key.reveal())
    assert not first.is_error
    assert auth.refreshes == 3
    assert mcp.token_calls - calls_before == 3
    assert len(set(seen)) == 4  # a new access key after each renewal
    assert auth.credentials.expires_at > mcp.clock.now()


async def test_sdk_client_keeps_working_across_renewals(stateless_mcp: GuardedMCP) -> None:
    await _renew_three_times(stateless_mcp)


async def test_sdk_session_survives_renewals(mcp: GuardedMCP) -> None:
    await _renew_three_times(mcp)


def test_httpx2_sync_client_is_signed() -> None:
    server, state = serve()
    with server:
        dpop_key = DPoPKey.generate()
        keys = anyio.run(state.issue, dpop_key)
        auth = state.auth(keys, dpop_key)
        with httpx2.Client(auth=auth, timeout=10) as http:
            response = http.get(state.origin + "/.well-known/oauth-protected-resource/mcp")
            refused = httpx.post(state.resource, json={})
            initialize = http.post(
                state.resource,
                content=b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{'
                b'"protocolVersion":"2025-06-18","capabilities":{},'
                b'"clientInfo":{"name":"t","version":"1"}}}',
                headers={
                    "accept": "application/json, text/event-stream",
                    "content-type": "application/json",
                },
            )
    assert response.status_code == 200
    assert refused.status_code == 401
    assert initialize.status_code == 200


async def test_sdk_discovery_documents_are_public_and_parse(mcp: GuardedMCP) -> None:
    """The 401 names the metadata and the scopes; the documents answer without a key."""
    async with httpx2.AsyncClient(timeout=10) as http:
        refused = await http.post(mcp.resource, json={})
        resource = await http.get(mcp.origin + "/.well-known/oauth-protected-resource/mcp")
        server = await http.get(mcp.origin + "/.well-known/oauth-authorization-server")
    assert refused.status_code == 401
    assert extract_scope_from_www_auth(refused) == "notes:read notes:write"
    parsed = SDKResourceMetadata.model_validate_json(resource.content)
    assert [str(url).rstrip("/") for url in parsed.authorization_servers] == [mcp.origin]
    assert parsed.dpop_bound_access_tokens_required is True
    assert resource.json()["dpop_signing_alg_values_supported"] == ["ES256", "EdDSA", "Ed25519"]
    assert server.status_code == 200
    document = server.json()
    assert document["issuer"] == mcp.origin
    assert document["token_endpoint"] == mcp.token_url
    assert document["grant_types_supported"] == ["refresh_token"]
    assert document["dpop_signing_alg_values_supported"] == ["ES256", "EdDSA", "Ed25519"]
