"""RFC 9728 protected resource metadata and the challenge that points at it."""

from __future__ import annotations

import httpx
import pytest

from agentguard import Guard, RouteRule
from agentguard.asgi import AgentGuardMiddleware
from agentguard.asgi._metadata import (
    ProtectedResourceMetadata,
    advertise_metadata,
    metadata_url,
)
from agentguard.dpop import DPoPPolicy
from agentguard.errors import ConfigurationError
from agentguard.storage import MemoryStore

pytestmark = pytest.mark.anyio


def test_metadata_url_inserts_the_well_known_segment() -> None:
    assert metadata_url("https://api.test/mcp") == (
        "https://api.test/.well-known/oauth-protected-resource/mcp"
    )
    assert (
        metadata_url("https://api.test/") == "https://api.test/.well-known/oauth-protected-resource"
    )
    with pytest.raises(ConfigurationError):
        metadata_url("https://api.test/mcp?x=1")
    with pytest.raises(ConfigurationError):
        metadata_url("/mcp")


def test_document_is_generated_from_the_guard() -> None:
    guard = Guard(
        MemoryStore(),
        rules=[RouteRule("/crm", service="crm"), RouteRule("/open", service=None)],
        dpop=DPoPPolicy(public_origin="https://api.test", required=True),
    )
    metadata = ProtectedResourceMetadata.from_guard(
        guard, resource="https://api.test/crm", authorization_servers=["https://as.test"]
    )
    assert metadata.document() == {
        "resource": "https://api.test/crm",
        "authorization_servers": ["https://as.test"],
        "scopes_supported": ["crm:read", "crm:write"],
        "bearer_methods_supported": ["header"],
        "dpop_signing_alg_values_supported": ["ES256", "EdDSA", "Ed25519"],
        "dpop_bound_access_tokens_required": True,
    }
    challenge = advertise_metadata(guard, metadata)
    assert guard.challenge is challenge
    assert challenge.extra == (("resource_metadata", metadata.url),)
    assert advertise_metadata(guard, "https://api.test/other").extra == (
        ("resource_metadata", "https://api.test/other"),
    )


async def test_app_serves_the_document_and_401s_point_at_it() -> None:
    guard = Guard(MemoryStore(), rules=[RouteRule("/crm", service="crm")])
    metadata = ProtectedResourceMetadata.from_guard(guard, resource="http://testserver/crm")
    advertise_metadata(guard, metadata)
    served = metadata.app()
    guarded = AgentGuardMiddleware(served, guard)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=served), base_url="http://testserver"
    ) as client:
        document = await client.get(metadata.well_known_path)
        head = await client.head(metadata.well_known_path)
        post = await client.post(metadata.well_known_path)
        options = await client.options(metadata.well_known_path)
    assert document.json()["resource"] == "http://testserver/crm"
    assert document.headers["access-control-allow-origin"] == "*"
    assert (head.status_code, head.content) == (200, b"")
    assert post.status_code == 405
    assert options.status_code == 204
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=guarded), base_url="http://testserver"
    ) as client:
        refused = await client.get("/crm/x")
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == (
        'Bearer realm="agentguard", scope="crm:read crm:write", resource_metadata="http://testserver'
        '/.well-known/oauth-protected-resource/crm"'
    )
