"""AgentAuth under httpx2 (the client the ``mcp`` SDK is built on), over a real socket.

The same flow as under httpx: DPoP proofs over the URL and method exactly as httpx2 sends them,
renewal ahead of expiry (one refresh however many requests), one ``use_dpop_nonce`` answer, and
no import of httpx2 where it is not installed.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import anyio
import httpx
import httpx2
import pytest

from agentguard.client import AgentAuth, DPoPNonceLoop
from agentguard.dpop import DPoPKey
from agentguard.testing import FakeClock, make_user
from tests.client.conftest import LIFETIME, Server, credentials_for
from tests.client.test_credentials_file import sample


async def _aauth(server: Server) -> AgentAuth:
    user = await make_user(server.store, grants="crm:write")
    key = DPoPKey.generate()
    keys = await server.guard.issuer.issue(user.id, "ws-1", jkt=key.thumbprint)
    credentials = credentials_for(keys, key, server.url + "/oauth/token")
    return AgentAuth(credentials, clock=server.clock)


def _auth(server: Server) -> AgentAuth:
    return anyio.run(_aauth, server)


def _claims(proof: str) -> dict[str, object]:
    part = proof.split(".")[1]
    decoded: dict[str, object] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


def test_agent_auth_is_an_auth_of_both_clients(server: Server) -> None:
    auth = _auth(server)
    assert isinstance(auth, httpx.Auth)
    assert isinstance(auth, httpx2.Auth)
    httpx2.AsyncClient(auth=auth)  # the SDK's TypeError ("Invalid auth argument") is gone
    httpx2.Client(auth=auth).close()


@pytest.mark.anyio
async def test_async_client_signs_the_url_as_sent_and_renews_once(server: Server) -> None:
    auth = await _aauth(server)
    sent: list[httpx2.Request] = []

    async def record(request: httpx2.Request) -> None:
        sent.append(request)

    async with httpx2.AsyncClient(
        base_url=server.url, auth=auth, timeout=10, event_hooks={"request": [record]}
    ) as client:
        first = await client.get("/crm/contacts", params={"q": "a b", "x": "~"})
        server.clock.advance(LIFETIME * 0.9)  # due for renewal, still valid

        async def call() -> None:
            assert (await client.post("/crm/contacts")).status_code == 200

        async with anyio.create_task_group() as group:
            for _ in range(10):
                group.start_soon(call)
    assert first.json() == {"user": "user-1", "method": "GET"}
    assert auth.refreshes == 1
    assert server.recorder.token_calls == 1
    assert server.recorder.statuses.count(401) == 0
    for request in sent:
        claims = _claims(request.headers["dpop"])
        assert claims["htm"] == request.method
        assert claims["htu"] == str(request.url).split("?")[0]  # no query (RFC 9449 §4.2)
    assert "q=a+b" in str(sent[0].url)
    assert {request.headers["authorization"].split()[0] for request in sent} == {"DPoP"}


def test_sync_client_renews_an_expired_key_before_sending(server: Server) -> None:
    auth = _auth(server)
    with httpx2.Client(base_url=server.url, auth=auth, timeout=10) as client:
        assert client.get("/crm/contacts").status_code == 200
        server.clock.advance(LIFETIME + 1)
        assert client.delete("/crm/contacts").status_code == 200
    assert auth.refreshes == 1
    assert server.recorder.statuses == [200, 200]


@pytest.mark.anyio
async def test_async_client_answers_a_server_nonce() -> None:
    with Server(nonces=True) as server:
        auth = await _aauth(server)
        async with httpx2.AsyncClient(base_url=server.url, auth=auth, timeout=10) as client:
            assert (await client.get("/crm/contacts")).status_code == 200
            assert (await client.get("/crm/contacts")).status_code == 200
        # the first call met use_dpop_nonce once; the second reused the nonce it learnt
        assert server.recorder.statuses == [401, 200, 200]


def test_a_repeated_nonce_demand_is_named_not_looped() -> None:
    counter = iter(range(100))

    def handler(request: httpx2.Request) -> httpx2.Response:
        headers = {
            "www-authenticate": 'DPoP realm="x", error="use_dpop_nonce"',
            "dpop-nonce": f"n{next(counter)}",
        }
        return httpx2.Response(401, headers=headers)

    key = DPoPKey.generate()
    credentials = sample()
    auth = AgentAuth(
        credentials.__class__(**{**credentials.__dict__, "dpop_key": key}), clock=FakeClock()
    )
    transport = httpx2.MockTransport(handler)
    with (
        httpx2.Client(transport=transport, auth=auth) as client,
        pytest.raises(DPoPNonceLoop) as caught,
    ):
        client.get("https://api.example.com/crm?token=do-not-log")
    assert next(counter) == 2  # the first try and exactly one retry
    assert "do-not-log" not in str(caught.value)


def test_without_httpx2_agent_auth_is_an_httpx_auth_and_works() -> None:
    script = """
import sys
sys.modules["httpx2"] = None  # any import of httpx2 now raises ImportError
import httpx
from agentguard.client import AgentAuth
assert AgentAuth.__mro__[1:] == (httpx.Auth, object), AgentAuth.__mro__
assert "httpx2" not in {name for name, module in sys.modules.items() if module is not None}
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.stdout.strip() == "ok", done.stderr[-2000:]
