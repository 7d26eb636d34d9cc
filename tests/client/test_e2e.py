"""End to end over a real socket: uvicorn on 127.0.0.1, the real OAuth endpoints, DPoP required."""

from __future__ import annotations

import threading
from pathlib import Path

import anyio
import httpx
import pytest

from agentguard.client import AgentAuth, DPoPNonceLoop, RefreshFailed
from agentguard.dpop import DPoPKey
from agentguard.testing import FakeClock, make_user
from tests.client.conftest import LIFETIME, Server, credentials_for, write_file


def _issue(server: Server, directory: Path) -> AgentAuth:
    user = anyio.run(lambda: make_user(server.store, grants="crm:read"))
    key = DPoPKey.generate()
    keys = anyio.run(lambda: server.guard.issuer.issue(user.id, "ws-1", jkt=key.thumbprint))
    credentials = credentials_for(keys, key, server.url + "/oauth/token", resource_url=server.url)
    file = write_file(directory, credentials)
    return AgentAuth.from_file(file.path, clock=server.clock)


def test_sync_client_across_three_lifetimes_then_disabled(
    server: Server, private_dir: Path
) -> None:
    auth = _issue(server, private_dir)
    with httpx.Client(base_url=server.url, auth=auth, timeout=5) as client:
        for _ in range(int(3 * LIFETIME / 300) + 1):
            assert client.get("/crm/contacts").json() == {"user": "user-1", "method": "GET"}
            server.clock.advance(300)
        assert client.post("/crm/contacts").status_code == 403  # read-only user: not a 401
        user = anyio.run(lambda: server.store.get_user("user-1"))
        assert user is not None
        anyio.run(lambda: server.store.put_user(user.model_copy(update={"enabled": False})))
        with pytest.raises(RefreshFailed) as caught:
            client.get("/crm/contacts")
        with pytest.raises(RefreshFailed) as again:
            auth.renew(fraction=0)  # the explicit renewal meets the same refusal
    refusal = caught.value
    assert (refusal.status, refusal.error, refusal.reason) == (
        400,
        "invalid_grant",
        "user_disabled",
    )
    assert refusal.permanent and not refusal.transient
    assert str(refusal) == (
        "refresh refused: invalid_grant (user_disabled: the user is disabled); "
        "issue new keys with `agentguard keys issue`"
    )
    assert repr(again.value) == repr(refusal)
    assert 401 in server.recorder.statuses[-1:]  # the refused call, then the refused refresh
    assert server.recorder.statuses.count(401) == 1
    assert server.recorder.token_calls == 5  # three renewals, the refused one, renew()
    assert auth.file is not None
    assert auth.file.load().access_key == auth.credentials.access_key


def test_threads_at_expiry_share_one_refresh(server: Server, private_dir: Path) -> None:
    auth = _issue(server, private_dir)
    server.clock.advance(LIFETIME + 5)
    statuses: list[int] = []
    with httpx.Client(base_url=server.url, auth=auth, timeout=10) as client:

        def call() -> None:
            statuses.append(client.get("/crm/contacts").status_code)

        threads = [threading.Thread(target=call) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=20)
    assert statuses == [200] * 20
    assert server.recorder.token_calls == 1


@pytest.mark.anyio
async def test_async_client_with_server_nonces(private_dir: Path) -> None:
    with Server(nonces=True) as server:
        user = await make_user(server.store, grants="crm:read")
        key = DPoPKey.generate()
        keys = await server.guard.issuer.issue(user.id, "ws-1", jkt=key.thumbprint)
        auth = AgentAuth(
            credentials_for(keys, key, server.url + "/oauth/token"), clock=server.clock
        )
        async with httpx.AsyncClient(base_url=server.url, auth=auth, timeout=5) as client:
            for _ in range(3):
                server.clock.advance(0.9 * LIFETIME)
                assert (await client.get("/crm/contacts")).status_code == 200
        assert auth.refreshes == 3


def test_sync_nonce_loop_is_named(private_dir: Path) -> None:
    counter = iter(range(100))

    def handler(request: httpx.Request) -> httpx.Response:
        headers = {
            "www-authenticate": 'DPoP realm="x", error="use_dpop_nonce"',
            "dpop-nonce": f"n{next(counter)}",
        }
        return httpx.Response(401, headers=headers)

    key = DPoPKey.generate()
    from tests.client.test_credentials_file import sample

    credentials = sample()
    auth = AgentAuth(
        credentials.__class__(**{**credentials.__dict__, "dpop_key": key}), clock=FakeClock()
    )
    transport = httpx.MockTransport(handler)
    with httpx.Client(transport=transport, auth=auth) as client, pytest.raises(DPoPNonceLoop):
        client.get("https://api.example.com/crm")
    assert next(counter) == 2  # the first try and exactly one retry
