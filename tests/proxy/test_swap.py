"""The swap, end to end: the agent's placeholder in, the real key out, over real sockets."""

from __future__ import annotations

import base64

import pytest

from agentguard import CredentialOwner, CredentialScope
from tests.conftest import CANARY
from tests.proxy.conftest import ADMIN_KEY, AUTOMATIONS_KEY, Gateway, grants

pytestmark = pytest.mark.anyio


def assert_clean(gateway: Gateway, text: str) -> None:
    for secret in (CANARY, AUTOMATIONS_KEY, ADMIN_KEY):
        assert secret not in text
        assert base64.b64encode(secret.encode()).decode() not in text


async def test_user_scoped_header_key_is_swapped(gateway: Gateway) -> None:
    response = await gateway.client.get(
        "/crm/contacts?limit=5", headers={"X-Api-Key": gateway.key, "X-Trace": "t-1"}
    )
    assert response.status_code == 200
    assert response.json()["path"] == "/v2/contacts"
    seen = gateway.upstreams.crm.requests[-1]
    assert seen.header("x-api-key") == CANARY
    assert seen.query == "limit=5"
    assert seen.header("x-trace") == "t-1"
    assert gateway.key not in seen.raw
    assert seen.header("authorization") is None and seen.header("dpop") is None
    assert_clean(gateway, response.text + str(response.headers))


async def test_query_key_is_swapped_and_placeholder_removed(gateway: Gateway) -> None:
    response = await gateway.client.get(f"/automations/runs?api_key={gateway.key}&state=ok")
    assert response.status_code == 200
    seen = gateway.upstreams.automations.requests[-1]
    assert seen.query == f"state=ok&api_key={AUTOMATIONS_KEY}"
    assert gateway.key not in seen.raw


async def test_admin_key_is_never_forwarded_a_minted_token_is(gateway: Gateway) -> None:
    headers = {"Authorization": f"Bearer {gateway.key}"}
    first = await gateway.client.get("/projects/boards", headers=headers)
    second = await gateway.client.get("/projects/boards/7", headers=headers)
    assert (first.status_code, second.status_code) == (200, 200)
    sent = [r.header("authorization") for r in gateway.upstreams.projects.requests]
    assert sent == ["Bearer minted-user-1-1", "Bearer minted-user-1-1"]  # minted once, cached
    assert all(ADMIN_KEY not in r.raw for r in gateway.upstreams.projects.requests)
    assert len(gateway.upstreams.exchange.calls) == 1
    call = gateway.upstreams.exchange.calls[0]
    assert call["subject_token"] == "user-1"
    assert call["grant_type"] == "urn:ietf:params:oauth:grant-type:token-exchange"
    mint_events = [e for e in await gateway.events() if e["action"] == "credential.mint"]
    assert len(mint_events) == 1
    assert_clean(gateway, first.text + second.text)


async def test_minted_token_is_renewed_after_its_fraction_and_on_grant_change(
    gateway: Gateway,
) -> None:
    headers = {"Authorization": f"Bearer {gateway.key}"}
    await gateway.client.get("/projects/a", headers=headers)
    gateway.clock.advance(239)  # 80% of the 300 s lifetime is 240 s
    await gateway.client.get("/projects/a", headers=headers)
    assert len(gateway.upstreams.exchange.calls) == 1
    gateway.clock.advance(2)
    await gateway.client.get("/projects/a", headers=headers)
    assert len(gateway.upstreams.exchange.calls) == 2
    promoted = gateway.user.model_copy(
        update={"grants": grants("crm:write automations:read projects:write")}
    )
    await gateway.store.put_user(promoted)
    await gateway.client.get("/projects/a", headers=headers)
    assert len(gateway.upstreams.exchange.calls) == 3  # state changed: the old token is dropped


async def test_level_refused_before_anything_goes_upstream(gateway: Gateway) -> None:
    response = await gateway.client.post(
        "/automations/runs", params={"api_key": gateway.key}, json={"x": 1}
    )
    assert response.status_code == 403
    assert response.json()["scope"] == "automations:write"
    assert gateway.upstreams.automations.requests == []


async def test_key_in_the_wrong_place_is_missing(gateway: Gateway) -> None:
    response = await gateway.client.get(
        "/crm/contacts", headers={"Authorization": f"Bearer {gateway.key}"}
    )
    assert response.status_code == 401
    assert "X-Api-Key" in response.json()["error_description"]
    assert gateway.upstreams.crm.requests == []


async def test_revoked_key_stops_at_the_gateway(gateway: Gateway) -> None:
    await gateway.guard.issuer.revoke(key_id=gateway.keys.access.id)
    response = await gateway.client.get("/crm/contacts", headers={"X-Api-Key": gateway.key})
    assert (response.status_code, response.json()["reason"]) == (401, "revoked")
    assert gateway.upstreams.crm.requests == []


async def test_missing_credential_is_502_never_unauthenticated(gateway: Gateway) -> None:
    await gateway.vault.delete("automations", CredentialOwner.USER, "user-1")
    response = await gateway.client.get("/automations/runs", params={"api_key": gateway.key})
    assert response.status_code == 502
    body = response.json()
    assert (body["reason"], body["service"]) == ("credential_unavailable", "automations")
    assert gateway.upstreams.automations.requests == []


async def test_wrong_real_key_upstream_401_is_replaced(gateway: Gateway) -> None:
    await gateway.vault.put(
        "crm",
        CredentialOwner.USER,
        "user-1",
        "crm-stale-key-000000000000",
        scope=CredentialScope.USER,
    )
    response = await gateway.client.get("/crm/contacts", headers={"X-Api-Key": gateway.key})
    assert response.status_code == 502
    assert response.json()["reason"] == "upstream_rejected_credential"
    assert "crm-stale-key" not in response.text  # the vendor echoed it; the agent never sees it


async def test_hop_by_hop_and_forwarding_headers(gateway: Gateway) -> None:
    response = await gateway.client.get(
        "/crm/contacts",
        headers={
            "X-Api-Key": gateway.key,
            "Connection": "keep-alive, X-Secret-Hop",
            "X-Secret-Hop": "drop me",
            "X-Forwarded-For": "6.6.6.6",
            "Cookie": "session=agent",
        },
    )
    assert response.status_code == 200
    seen = gateway.upstreams.crm.requests[-1]
    assert seen.header("x-secret-hop") is None
    assert seen.header("cookie") is None
    assert seen.header("x-forwarded-for") != "6.6.6.6"  # ours, not the agent's
    assert seen.header("x-forwarded-proto") == "http"
    assert seen.header("x-forwarded-host") == "gateway.test"


@pytest.mark.parametrize(
    "path",
    ["/crm/..%2F..%2Fadmin", "/crm/%2E%2E/x", "/crm//evil.example/x", "/crm/%2e%2e%2fadmin"],
)
async def test_paths_cannot_escape_the_base_url(gateway: Gateway, path: str) -> None:
    response = await gateway.client.get(path, headers={"X-Api-Key": gateway.key})
    assert response.status_code in (400, 404)
    assert all(r.path.startswith("/v2/") for r in gateway.upstreams.crm.requests)


async def test_encoded_separators_are_refused_before_the_vendor(gateway: Gateway) -> None:
    # Issue 14: '%5C' and '%2F' mean different paths to different servers; refused (400).
    response = await gateway.client.get("/crm/a%5Cb%2Fc", headers={"X-Api-Key": gateway.key})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert gateway.upstreams.crm.requests == []


async def test_every_failure_is_audited_without_secrets(gateway: Gateway) -> None:
    await gateway.vault.delete("automations", CredentialOwner.USER, "user-1")
    await gateway.client.get("/automations/runs", params={"api_key": gateway.key})
    await gateway.client.get("/crm/contacts", headers={"X-Api-Key": gateway.key})
    events = await gateway.events()
    upstream = [e for e in events if e["action"] == "proxy.upstream"]
    assert [(e["service"], e["reason"], e["status"]) for e in upstream] == [
        ("automations", "credential_unavailable", 502)
    ]
    log = "".join(str(e) for e in events)
    assert_clean(gateway, log)
    assert gateway.key not in log
