"""The token round trip: the refresh answer's parser, and one flow for both clients."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentguard.client import AgentAuth, DPoPNonceLoop, RefreshFailed
from agentguard.client._token import parse_token_response
from agentguard.testing import FakeClock
from tests.client.conftest import LIFETIME, ORIGIN, Runtime, write_file
from tests.client.test_credentials_file import NOW, sample

KEY = "ag_rt_" + "k" * 40
_json = st.recursive(  # short texts: only KEY is a well-formed key
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=7),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
_bodies = st.fixed_dictionaries(
    {},
    optional={
        "access_token": st.sampled_from([KEY, "short", "a b c d e f g h"]) | _json,
        "refresh_token": st.just(KEY) | _json,
        "expires_in": st.integers() | st.just(10**15) | _json,
        "token_type": st.sampled_from(["DPoP", "bearer", "mac"]) | _json,
    },
)


def _usable(body: dict[str, Any], bound: bool) -> bool:
    scheme = body.get("token_type")
    lifetime = body.get("expires_in")
    return (
        body.get("access_token") == body.get("refresh_token") == KEY
        and type(lifetime) is int
        and 0 < lifetime < 10**9
        and isinstance(scheme, str)
        and scheme.lower() in ("dpop", "bearer")
        and (bound or scheme.lower() == "bearer")
    )


@given(body=_bodies, bound=st.booleans())
def test_token_answer_is_usable_keys_or_a_permanent_refusal(
    body: dict[str, Any], bound: bool
) -> None:
    credentials = sample(bound=bound)
    if not _usable(body, bound):
        with pytest.raises(RefreshFailed) as caught:
            parse_token_response(credentials, body, NOW)
        assert (caught.value.status, caught.value.error) == (200, "invalid_response")
        assert caught.value.permanent
        return
    renewed = parse_token_response(credentials, body, NOW)
    assert renewed.access_key.reveal() == renewed.refresh_key.reveal() == KEY
    assert renewed.expires_at == NOW + timedelta(seconds=body["expires_in"])
    assert renewed.token_type == ("DPoP" if body["token_type"].lower() == "dpop" else "Bearer")
    assert renewed.dpop_key is credentials.dpop_key


def test_absurd_lifetime_is_refused_not_a_crash() -> None:
    body = {"access_token": KEY, "refresh_token": KEY, "token_type": "DPoP", "expires_in": 10**15}
    with pytest.raises(RefreshFailed) as caught:
        parse_token_response(sample(), body, NOW)
    assert caught.value.permanent


def _always_new_nonce() -> httpx.MockTransport:
    counter = iter(range(100))

    def handler(request: httpx.Request) -> httpx.Response:
        headers = {"dpop-nonce": f"n{next(counter)}"}
        return httpx.Response(400, headers=headers, json={"error": "use_dpop_nonce"})

    return httpx.MockTransport(handler)


def test_sync_client_stops_a_token_nonce_loop() -> None:
    clock = FakeClock(NOW + timedelta(hours=1))
    auth = AgentAuth(sample(), clock=clock, token_transport=_always_new_nonce())
    resource = httpx.MockTransport(lambda request: httpx.Response(200))
    with httpx.Client(transport=resource, auth=auth) as client, pytest.raises(DPoPNonceLoop):
        client.get("https://api.example.com/crm/contacts")
    with pytest.raises(DPoPNonceLoop):
        auth.renew(fraction=0)


@pytest.mark.anyio
async def test_a_request_waiting_on_its_server_never_blocks_a_renewal(runtime: Runtime) -> None:
    arrived, release = anyio.Event(), anyio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        arrived.set()
        await release.wait()
        return httpx.Response(200)

    auth = runtime.auth()
    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(slow), auth=auth) as client,
        anyio.create_task_group() as group,
    ):
        group.start_soon(client.get, ORIGIN + "/crm/contacts")
        await arrived.wait()
        with anyio.fail_after(5):
            assert await auth.arenew(fraction=0)
        release.set()
    assert runtime.recorder.token_calls == 1


@pytest.mark.anyio
async def test_a_cancelled_request_still_keeps_and_saves_the_rotated_keys(
    runtime: Runtime, private_dir: Path
) -> None:
    started, release = anyio.Event(), anyio.Event()

    class Gate(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            started.set()
            await release.wait()
            return await runtime.transport.handle_async_request(request)

    file = write_file(private_dir, runtime.credentials())
    auth = AgentAuth.from_file(file.path, clock=runtime.clock, async_token_transport=Gate())
    before = auth.credentials
    runtime.clock.advance(0.9 * LIFETIME)
    async with runtime.client(auth) as client:
        async with anyio.create_task_group() as group:
            group.start_soon(client.get, "/crm/contacts")
            await started.wait()
            group.cancel_scope.cancel()  # the refresh is on the wire: it must finish
            release.set()
        assert auth.credentials.access_key != before.access_key
        assert file.load().access_key == auth.credentials.access_key
        assert (await client.get("/crm/contacts")).status_code == 200
    assert runtime.recorder.token_calls == 1
