"""AgentAuth against the real guarded app and token endpoint (in-process, on a fake clock)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from agentguard import Secret
from agentguard.client import AgentAuth, DPoPNonceLoop, RefreshFailed
from agentguard.dpop import DPoPPolicy
from tests.client.conftest import (
    LIFETIME,
    ORIGIN,
    TOKEN_URL,
    credentials_for,
    make_runtime,
    write_file,
)
from tests.client.conftest import Runtime as Setup

pytestmark = pytest.mark.anyio


async def test_requests_carry_dpop_key_and_fresh_proof(runtime: Setup) -> None:
    seen: list[httpx.Request] = []

    async with runtime.client(runtime.auth()) as client:
        client.event_hooks["request"].append(lambda request: _record(seen, request))
        assert (await client.get("/crm/contacts")).json()["user"] == "user-1"
        assert (await client.post("/crm/contacts", json={"a": 1})).status_code == 200
    assert [r.headers["authorization"].split()[0] for r in seen] == ["DPoP", "DPoP"]
    assert seen[0].headers["dpop"] != seen[1].headers["dpop"]
    assert runtime.recorder.token_calls == 0


async def _record(seen: list[httpx.Request], request: httpx.Request) -> None:
    seen.append(request)


async def test_job_across_three_lifetimes_never_sees_a_401(runtime: Setup) -> None:
    auth = runtime.auth()
    async with runtime.client(auth) as client:
        for _ in range(int(3 * LIFETIME / 120) + 1):  # a call every two minutes for 3 hours
            response = await client.get("/crm/contacts")
            assert response.status_code == 200
            runtime.clock.advance(120)
    assert 401 not in runtime.recorder.statuses
    assert runtime.recorder.token_calls == 3  # renewed at 80% of each lifetime, ahead of expiry
    assert auth.refreshes == 3


async def test_fifty_concurrent_requests_at_the_renewal_point_refresh_once(
    runtime: Setup,
) -> None:
    runtime.clock.advance(0.85 * LIFETIME)
    auth = runtime.auth()
    statuses: list[int] = []
    async with runtime.client(auth) as client:

        async def call() -> None:
            statuses.append((await client.get("/crm/contacts")).status_code)

        async with anyio.create_task_group() as group:
            for _ in range(50):
                group.start_soon(call)
    assert statuses == [200] * 50
    assert runtime.recorder.token_calls == 1


async def test_fifty_concurrent_requests_after_expiry_wait_for_one_refresh(
    runtime: Setup,
) -> None:
    runtime.clock.advance(LIFETIME + 60)
    auth = runtime.auth()
    statuses: list[int] = []
    async with runtime.client(auth) as client:

        async def call() -> None:
            statuses.append((await client.get("/crm/contacts")).status_code)

        async with anyio.create_task_group() as group:
            for _ in range(50):
                group.start_soon(call)
    assert statuses == [200] * 50
    assert runtime.recorder.token_calls == 1
    assert 401 not in runtime.recorder.statuses  # nobody used the expired key


async def test_disabled_user_stops_on_the_next_call(runtime: Setup) -> None:
    async with runtime.client(runtime.auth()) as client:
        assert (await client.get("/crm/contacts")).status_code == 200
        await runtime.disable_user()
        with pytest.raises(RefreshFailed) as caught:
            await client.get("/crm/contacts")
    assert (caught.value.status, caught.value.error, caught.value.reason) == (
        400,
        "invalid_grant",
        "user_disabled",
    )
    assert caught.value.permanent and not caught.value.transient
    assert str(caught.value) == (
        "refresh refused: invalid_grant (user_disabled: the user is disabled); "
        "issue new keys with `agentguard keys issue`"
    )
    assert runtime.keys.refresh_key.reveal() not in str(caught.value)
    assert runtime.recorder.token_calls == 1  # one refresh, then it gave up


async def test_disabled_user_stops_on_the_next_refresh(runtime: Setup) -> None:
    auth = runtime.auth()
    async with runtime.client(auth) as client:
        assert (await client.get("/crm/contacts")).status_code == 200
        await runtime.disable_user()
        runtime.clock.advance(0.9 * LIFETIME)
        with pytest.raises(RefreshFailed) as caught:
            await client.get("/crm/contacts")
    assert caught.value.reason == "user_disabled"
    with pytest.raises(RefreshFailed):
        await auth.arenew(fraction=0)


async def test_revoked_family_stops_the_runtime(runtime: Setup) -> None:
    async with runtime.client(runtime.auth()) as client:
        await runtime.guard.issuer.revoke(family_id=runtime.keys.access.family_id)
        with pytest.raises(RefreshFailed) as caught:
            await client.get("/crm/contacts")
    assert caught.value.reason == "revoked" and caught.value.permanent
    assert "invalid_grant (revoked: the keys were revoked)" in str(caught.value)


async def test_revoked_access_key_is_replaced_by_one_refresh(runtime: Setup) -> None:
    async with runtime.client(runtime.auth()) as client:
        await runtime.guard.issuer.revoke(key_id=runtime.keys.access.id)
        assert (await client.get("/crm/contacts")).status_code == 200
    assert runtime.recorder.statuses == [401, 200]
    assert runtime.recorder.token_calls == 1


async def test_nonce_is_retried_once_and_remembered() -> None:
    policy = DPoPPolicy(public_origin=ORIGIN, nonce_secret=b"r" * 32, token_nonce_secret=b"t" * 32)
    setup = await make_runtime(policy=policy)
    auth = setup.auth()
    async with setup.client(auth) as client:
        assert (await client.get("/crm/contacts")).status_code == 200
        assert (await client.get("/crm/contacts")).status_code == 200
        assert setup.recorder.statuses == [401, 200, 200]  # the nonce is reused
        setup.clock.advance(0.9 * LIFETIME)  # nonces rotated, and renewal is due
        assert (await client.get("/crm/contacts")).status_code == 200
    assert setup.recorder.token_calls == 2  # use_dpop_nonce at the token endpoint, then 200
    assert auth.refreshes == 1


def _always_new_nonce(status: int) -> httpx.MockTransport:
    counter = iter(range(1000))

    def handler(request: httpx.Request) -> httpx.Response:
        nonce = f"nonce-{next(counter)}"
        if status == 401:
            headers = {
                "www-authenticate": 'DPoP error="use_dpop_nonce", error_description="x"',
                "dpop-nonce": nonce,
            }
            return httpx.Response(401, headers=headers, json={"error": "use_dpop_nonce"})
        return httpx.Response(400, headers={"dpop-nonce": nonce}, json={"error": "use_dpop_nonce"})

    return httpx.MockTransport(handler)


async def test_resource_that_keeps_demanding_a_nonce_raises_nonce_loop(runtime: Setup) -> None:
    auth = runtime.auth()
    transport = _always_new_nonce(401)
    async with httpx.AsyncClient(transport=transport, base_url=ORIGIN, auth=auth) as client:
        with pytest.raises(DPoPNonceLoop):
            await client.get("/crm/contacts")


@pytest.mark.parametrize("reason", ["wrong_audience", "audience_required"])
async def test_a_key_for_another_resource_is_returned_not_renewed(
    runtime: Setup, reason: str
) -> None:
    """No refresh can cure an audience refusal: the 401 comes back as it is, no key spent."""

    def handler(request: httpx.Request) -> httpx.Response:
        headers = {"www-authenticate": 'DPoP error="invalid_token"'}
        return httpx.Response(
            401, headers=headers, json={"error": "invalid_token", "reason": reason}
        )

    auth = runtime.auth()
    transport = httpx.MockTransport(handler)
    async with httpx.AsyncClient(transport=transport, base_url=ORIGIN, auth=auth) as client:
        response = await client.get("/crm/contacts")
    assert (response.status_code, response.json()["reason"]) == (401, reason)
    assert runtime.recorder.token_calls == 0
    assert auth.refreshes == 0


async def test_token_endpoint_that_keeps_demanding_a_nonce_raises_nonce_loop(
    runtime: Setup,
) -> None:
    runtime.clock.advance(LIFETIME)
    auth = runtime.auth(async_token_transport=_always_new_nonce(400))
    async with runtime.client(auth) as client:
        with pytest.raises(DPoPNonceLoop):
            await client.get("/crm/contacts")


async def test_rotated_keys_are_persisted_to_the_file(runtime: Setup, private_dir: Path) -> None:
    file = write_file(private_dir, runtime.credentials())
    auth = AgentAuth.from_file(
        file.path, clock=runtime.clock, async_token_transport=runtime.transport
    )
    runtime.clock.advance(0.9 * LIFETIME)
    async with runtime.client(auth) as client:
        assert (await client.get("/crm/contacts")).status_code == 200
    on_disk = file.load()
    assert on_disk.refresh_key != runtime.keys.refresh_key
    assert on_disk.access_key == auth.credentials.access_key
    assert on_disk.dpop_key is not None and runtime.dpop_key is not None
    assert on_disk.dpop_key.thumbprint == runtime.dpop_key.thumbprint


async def test_two_processes_sharing_a_file_never_reuse_a_refresh_key(
    runtime: Setup, private_dir: Path
) -> None:
    file = write_file(private_dir, runtime.credentials())
    options: dict[str, Any] = {
        "clock": runtime.clock,
        "async_token_transport": runtime.transport,
    }
    first, second = (
        AgentAuth.from_file(file.path, **options),
        AgentAuth.from_file(file.path, **options),
    )
    runtime.clock.advance(0.9 * LIFETIME)
    async with runtime.client(first) as one, runtime.client(second) as two:
        assert (await one.get("/crm/contacts")).status_code == 200
        assert (await two.get("/crm/contacts")).status_code == 200  # adopts the file's keys
        runtime.clock.advance(0.9 * LIFETIME)
        assert (await two.get("/crm/contacts")).status_code == 200
        assert (await one.get("/crm/contacts")).status_code == 200
    assert runtime.recorder.token_calls == 2
    events = [e.event() for e in await runtime.store.read()]
    assert not [e for e in events if e["action"] == "key.reuse_detected"]


async def test_bearer_keys_are_sent_as_bearer() -> None:
    setup = await make_runtime(bound=False)
    auth = setup.auth()
    async with setup.client(auth) as client:
        response = await client.get("/crm/contacts")
        assert response.status_code == 200
        assert response.request.headers["authorization"].startswith("Bearer ag_at_")
        assert "dpop" not in response.request.headers
        setup.clock.advance(0.9 * LIFETIME)
        assert (await client.get("/crm/contacts")).status_code == 200
    assert auth.credentials.token_type == "Bearer"
    assert setup.recorder.token_calls == 1


async def test_keys_are_only_sent_under_the_resource_url(runtime: Setup) -> None:
    credentials = credentials_for(
        runtime.keys, runtime.dpop_key, TOKEN_URL, resource_url=ORIGIN + "/crm"
    )
    auth = AgentAuth(credentials, clock=runtime.clock, async_token_transport=runtime.transport)
    async with runtime.client(auth) as client:
        inside = await client.get("/crm/contacts")
        outside = await client.get("/projects/list")
        elsewhere = await client.get("http://other.test/crm/contacts")
    assert inside.status_code == 200
    assert "authorization" not in outside.request.headers
    assert "authorization" not in elsewhere.request.headers


async def test_refresh_never_passes_through_the_agents_client(runtime: Setup) -> None:
    seen: list[str] = []

    async def hook(response: httpx.Response) -> None:
        seen.append(response.request.url.path)

    runtime.clock.advance(0.9 * LIFETIME)
    auth = runtime.auth()
    async with runtime.client(auth) as client:
        client.event_hooks["response"].append(hook)
        response = await client.get("/crm/contacts")
    assert response.status_code == 200 and response.history == []
    assert seen == ["/crm/contacts"]
    assert runtime.recorder.token_calls == 1


async def test_transient_token_failure_keeps_the_valid_key(runtime: Setup) -> None:
    down = httpx.MockTransport(lambda request: httpx.Response(503, json={"error": "x"}))
    auth = runtime.auth(async_token_transport=down)
    runtime.clock.advance(0.85 * LIFETIME)
    async with runtime.client(auth) as client:
        assert (await client.get("/crm/contacts")).status_code == 200
        assert (await client.get("/crm/contacts")).status_code == 200  # backing off
        runtime.clock.advance(0.2 * LIFETIME)  # now expired: no fallback left
        with pytest.raises(RefreshFailed) as caught:
            await client.get("/crm/contacts")
    assert caught.value.status == 503 and not caught.value.permanent
    assert caught.value.transient
    assert str(caught.value) == "refresh failed: HTTP 503 x (no detail); retry later"


async def test_unreachable_token_endpoint_is_a_refresh_failure(runtime: Setup) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    auth = runtime.auth(async_token_transport=httpx.MockTransport(refuse))
    runtime.clock.advance(LIFETIME)
    async with runtime.client(auth) as client:
        with pytest.raises(RefreshFailed) as caught:
            await client.get("/crm/contacts")
    assert caught.value.status is None and caught.value.error == "temporarily_unavailable"
    assert caught.value.transient and not caught.value.permanent
    assert str(caught.value) == (
        "refresh failed: no answer from the token endpoint (ConnectError); retry later"
    )


async def test_malformed_token_response_is_permanent(runtime: Setup) -> None:
    odd = httpx.MockTransport(lambda request: httpx.Response(200, json={"access_token": 1}))
    auth = runtime.auth(async_token_transport=odd)
    with pytest.raises(RefreshFailed) as caught:
        await auth.arenew(fraction=0)
    assert caught.value.error == "invalid_response" and caught.value.permanent


async def test_placement_puts_the_key_where_the_service_expects_it(runtime: Setup) -> None:
    def vendor(request: httpx.Request, key: str) -> None:
        request.headers["X-Api-Key"] = key

    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200)

    auth = runtime.auth(placement=vendor)
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler), auth=auth) as client:
        await client.get(ORIGIN + "/crm/contacts")
    assert sent[0].headers["x-api-key"] == runtime.keys.access_key.reveal()
    assert "authorization" not in sent[0].headers and "dpop" in sent[0].headers


async def test_repr_never_shows_a_key(runtime: Setup) -> None:
    auth = runtime.auth()
    text = repr(auth) + repr(auth.credentials)
    for secret in (runtime.keys.access_key, runtime.keys.refresh_key):
        assert secret.reveal() not in text
    assert "PRIVATE KEY" not in text


def test_renew_at_must_be_a_fraction() -> None:
    with pytest.raises(ValueError, match="renew_at"):
        AgentAuth(None, renew_at=1.5)  # type: ignore[arg-type]


async def test_concurrent_threads_and_tasks_share_one_refresh(
    runtime: Setup, private_dir: Path
) -> None:
    file = write_file(private_dir, runtime.credentials())
    auth = AgentAuth.from_file(
        file.path, clock=runtime.clock, async_token_transport=runtime.transport
    )
    runtime.clock.advance(LIFETIME + 1)
    results: list[bool] = []

    async with anyio.create_task_group() as group:
        for _ in range(10):
            group.start_soon(lambda: _arenew(auth, results))
    assert results.count(True) == 10  # every caller ends with the renewed keys
    assert runtime.recorder.token_calls == 1
    assert json.loads(file.path.read_bytes())["access_key"] == auth.credentials.access_key.reveal()
    assert isinstance(auth.credentials.access_key, Secret)


async def _arenew(auth: AgentAuth, results: list[bool]) -> None:
    results.append(await auth.arenew())
