"""Discovery for MCP clients: RFC 8414 metadata of the token endpoint, RFC 9728 DPoP members,
and the ``scope`` of the 401 challenge (RFC 6750 §3)."""

from __future__ import annotations

import httpx
import pytest

from agentguard import Guard, RouteRule
from agentguard.asgi._metadata import (
    AuthorizationServerMetadata,
    ProtectedResourceMetadata,
    advertise_metadata,
    authorization_server_metadata_url,
)
from agentguard.dpop import DPoPPolicy
from agentguard.errors import (
    Challenge,
    ConfigurationError,
    InsufficientScope,
    InvalidDPoPProof,
    MissingCredentials,
    render_challenges,
)
from agentguard.storage import MemoryStore

pytestmark = pytest.mark.anyio

ORIGIN = "https://api.example.com"


def _guard(*, required: bool | None = True) -> Guard:
    dpop = None if required is None else DPoPPolicy(public_origin=ORIGIN, required=required)
    return Guard(MemoryStore(), rules=[RouteRule("/crm", service="crm")], dpop=dpop)


def test_authorization_server_document_lists_what_the_token_endpoint_does() -> None:
    metadata = AuthorizationServerMetadata.from_guard(_guard(), issuer=ORIGIN, introspection=True)
    assert metadata.url == ORIGIN + "/.well-known/oauth-authorization-server"
    assert metadata.well_known_path == "/.well-known/oauth-authorization-server"
    assert metadata.document() == {
        "issuer": ORIGIN,
        "token_endpoint": ORIGIN + "/oauth/token",
        "revocation_endpoint": ORIGIN + "/oauth/revoke",
        "revocation_endpoint_auth_methods_supported": ["none"],
        "introspection_endpoint": ORIGIN + "/oauth/introspect",
        "grant_types_supported": ["refresh_token"],
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": ["none"],
        "scopes_supported": ["crm:read", "crm:write"],
        "dpop_signing_alg_values_supported": ["ES256", "EdDSA", "Ed25519"],
    }


def test_an_issuer_with_a_path_and_endpoints_elsewhere() -> None:
    metadata = AuthorizationServerMetadata.from_guard(
        _guard(required=None),
        issuer=ORIGIN + "/tenant/",
        endpoints="https://auth.example.com/agentguard/oauth",
        scopes_supported=[],
    )
    assert authorization_server_metadata_url(ORIGIN + "/tenant/") == (
        ORIGIN + "/.well-known/oauth-authorization-server/tenant"
    )
    assert metadata.well_known_path == "/.well-known/oauth-authorization-server/tenant"
    document = metadata.document()
    assert document["token_endpoint"] == "https://auth.example.com/agentguard/oauth/token"
    assert "introspection_endpoint" not in document
    assert "scopes_supported" not in document
    assert "dpop_signing_alg_values_supported" not in document  # no DPoP on this guard


@pytest.mark.parametrize(
    "issuer", ["api.example.com", "https://api.example.com/?x=1", "https://a/#f", "ftp://a/"]
)
def test_a_malformed_issuer_is_a_configuration_error(issuer: str) -> None:
    with pytest.raises(ConfigurationError):
        AuthorizationServerMetadata(issuer=issuer, token_endpoint=ORIGIN + "/oauth/token")


def test_scopes_must_be_a_sequence_not_one_string() -> None:
    with pytest.raises(ConfigurationError, match="sequence"):
        AuthorizationServerMetadata(
            issuer=ORIGIN,
            token_endpoint=ORIGIN + "/t",
            scopes_supported="crm:read",  # type: ignore[arg-type]
        )


async def test_the_app_serves_the_document_publicly() -> None:
    metadata = AuthorizationServerMetadata.from_guard(_guard(), issuer=ORIGIN)
    transport = httpx.ASGITransport(app=metadata.app())
    async with httpx.AsyncClient(transport=transport, base_url=ORIGIN) as client:
        got = await client.get(metadata.well_known_path)
        head = await client.head(metadata.well_known_path)
        options = await client.options(metadata.well_known_path)
        post = await client.post(metadata.well_known_path)
    assert got.json() == metadata.document()
    assert got.headers["access-control-allow-origin"] == "*"
    assert (head.status_code, head.content) == (200, b"")
    assert options.status_code == 204
    assert post.status_code == 405 and post.json()["error"] == "invalid_request"
    assert repr(metadata.app()) == f"AuthorizationServerMetadataApp(issuer={ORIGIN!r})"


@pytest.mark.parametrize(("required", "expected"), [(True, True), (False, False)])
def test_resource_metadata_advertises_dpop(required: bool, expected: bool) -> None:
    document = ProtectedResourceMetadata.from_guard(
        _guard(required=required), resource=ORIGIN + "/mcp", authorization_servers=[ORIGIN]
    ).document()
    assert document["dpop_bound_access_tokens_required"] is expected
    assert document["dpop_signing_alg_values_supported"] == ["ES256", "EdDSA", "Ed25519"]


def test_advertised_scopes_ride_on_every_challenge_once() -> None:
    guard = _guard(required=False)
    metadata = ProtectedResourceMetadata.from_guard(guard, resource=ORIGIN + "/crm")
    challenge = advertise_metadata(guard, metadata)
    assert guard.challenge is challenge
    assert challenge.scope == "crm:read crm:write"
    missing = render_challenges(challenge, MissingCredentials())
    assert [value.split()[0] for value in missing] == ["DPoP", "Bearer"]
    assert all('scope="crm:read crm:write"' in value for value in missing)
    proof = render_challenges(challenge, InvalidDPoPProof())
    assert 'error="invalid_dpop_proof"' in proof[0] and 'scope="crm:read crm:write"' in proof[0]
    assert 'error="' not in proof[1] and 'scope="crm:read crm:write"' in proof[1]
    insufficient = render_challenges(challenge, InsufficientScope(required="crm:write"))
    for value in insufficient:  # the error's own scope, not the resource's list, and once
        assert value.count("scope=") == 1
        assert 'scope="crm:write"' in value
    # a URL keeps the scope; a document without scopes drops it
    assert advertise_metadata(guard, ORIGIN + "/other-metadata").scope == "crm:read crm:write"
    bare = ProtectedResourceMetadata(resource=ORIGIN + "/crm")
    assert advertise_metadata(guard, bare).scope is None
    assert "scope=" not in render_challenges(guard.challenge, MissingCredentials())[0]


def test_a_challenge_without_scope_renders_as_before() -> None:
    assert render_challenges(Challenge(), MissingCredentials()) == ['Bearer realm="agentguard"']
