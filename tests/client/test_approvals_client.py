"""The runtime's side of approvals, over real sockets: held back, waited for, retried once.

Most tests run the real guard (an approval rule on ``POST /crm``, DPoP required with nonces,
the real OAuth app and status endpoint) under uvicorn; an operator decides straight in the
store. A scripted server covers what a real guard never sends (an outage of the status
endpoint, a foreign ``approval_uri``, a malformed approval header).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from agentguard import Guard, RouteRule
from agentguard._secret import Secret
from agentguard.approvals._policy import ApprovalPolicy
from agentguard.asgi._types import Message, Receive, Scope, Send
from agentguard.client import AgentAuth, AgentCredentials
from agentguard.client._errors import (
    ApprovalDenied,
    ApprovalExpired,
    ApprovalPending,
    ApprovalRefused,
    ApprovalTimeout,
    ApprovalWaitFailed,
)
from agentguard.dpop import DPoPKey, DPoPPolicy
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock, make_user
from tests.asgi.conftest import build_app
from tests.client.conftest import LIFETIME, credentials_for, write_file
from tests.support.servers import LoopbackServer, free_port

FAST = {"initial_interval": 0.01, "max_interval": 0.05}


@dataclass
class Calls:
    """ASGI wrapper recording ``(method, path, status)`` of every response."""

    app: Any
    seen: list[tuple[str, str, int]] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def recording(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.seen.append((scope["method"], scope["path"], message["status"]))
            await send(message)

        await self.app(scope, receive, recording)

    def count(self, method: str, path_start: str, status: int | None = None) -> int:
        return sum(
            1
            for m, p, s in self.seen
            if m == method and p.startswith(path_start) and status in (None, s)
        )


class ApprovalServer(LoopbackServer):
    """The guarded app, POSTs under /crm held for approval, DPoP and nonces required."""

    def __init__(self, *, status_uri: bool = False) -> None:
        port = free_port()
        origin = f"http://127.0.0.1:{port}"
        self.clock = FakeClock()
        self.store = MemoryStore(clock=self.clock)
        policy = DPoPPolicy(
            public_origin=origin,
            required=True,
            nonce_secret=b"r" * 32,
            token_nonce_secret=b"t" * 32,
        )
        approvals = ApprovalPolicy(
            status_uri=origin + "/oauth/approvals/{id}" if status_uri else None
        )
        self.guard = Guard(
            self.store,
            rules=[RouteRule("/crm", service="crm", approval={"POST"})],
            clock=self.clock,
            dpop=policy,
            approvals=approvals,
        )
        self.calls = Calls(build_app(self.guard))
        super().__init__(self.calls, port=port)

    def __enter__(self) -> ApprovalServer:
        super().__enter__()
        return self

    def auth(self, directory: Path, *, resource_url: str | None = None) -> AgentAuth:
        return anyio.run(lambda: self.issue(directory, resource_url=resource_url))

    async def issue(self, directory: Path, *, resource_url: str | None = None) -> AgentAuth:
        user = await make_user(self.store, grants="crm:write")
        key = DPoPKey.generate()
        keys = await self.guard.issuer.issue(user.id, "ws-1", jkt=key.thumbprint)
        credentials = credentials_for(
            keys, key, self.url + "/oauth/token", resource_url=resource_url or self.url
        )
        return AgentAuth.from_file(write_file(directory, credentials).path, clock=self.clock)

    def decide(self, approval_id: str, *, approve: bool) -> None:
        anyio.run(lambda: self.adecide(approval_id, approve=approve))

    async def adecide(self, approval_id: str, *, approve: bool) -> None:
        decided = await self.store.decide_approval(
            approval_id, approve=approve, by="op-1", now=self.clock.now()
        )
        assert decided is not None

    def polls(self) -> int:
        return self.calls.count("GET", "/oauth/approvals/", 200)

    def forwarded(self) -> int:
        return self.calls.count("POST", "/crm/contacts", 200)


@pytest.fixture
def server() -> Iterator[ApprovalServer]:
    with ApprovalServer() as running:
        yield running


def when(condition: Any, then: Any, timeout: float = 10.0) -> threading.Thread:
    """In a thread: once ``condition()`` holds, run ``then()`` (the operator, deciding)."""

    def watch() -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                return
            time.sleep(0.005)
        then()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


PAYLOAD = {"name": "Jane"}


@pytest.mark.anyio
async def test_held_call_waits_then_runs_once_async(
    server: ApprovalServer, private_dir: Path
) -> None:
    auth = await server.issue(private_dir)
    async with httpx.AsyncClient(base_url=server.url, auth=auth, timeout=5) as client:
        with pytest.raises(ApprovalPending) as caught:
            await client.post("/crm/contacts", json=PAYLOAD)
        pending = caught.value
        assert pending.approval_id.startswith("apr_")
        assert pending.reason == "approval_required"
        assert pending.approval_uri is None  # derived from the token endpoint instead
        assert pending.expires_at == server.clock.now() + timedelta(hours=1)
        assert pending.retry_headers == {"AgentGuard-Approval": pending.approval_id}
        with pytest.raises(ApprovalPending) as again:  # the same call: the same approval
            await client.post("/crm/contacts", json=PAYLOAD)
        assert again.value.approval_id == pending.approval_id
        with pytest.raises(ApprovalPending) as early:  # named before anyone decided
            await client.post("/crm/contacts", json=PAYLOAD, headers=pending.retry_headers)
        assert early.value.reason == "approval_pending"
        operator = when(
            lambda: server.polls() >= 3,
            lambda: server.decide(pending.approval_id, approve=True),
        )
        await auth.wait_for_approval(pending, timeout=10, **FAST)
        operator.join()
        assert server.polls() >= 4
        response = await client.post("/crm/contacts", json=PAYLOAD, headers=pending.retry_headers)
        assert response.status_code == 200
        with pytest.raises(ApprovalRefused) as used:
            await client.post("/crm/contacts", json=PAYLOAD, headers=pending.retry_headers)
    assert used.value.reason == "approval_used"
    assert server.forwarded() == 1


def test_held_call_waits_then_runs_once_sync(server: ApprovalServer, private_dir: Path) -> None:
    auth = server.auth(private_dir)
    with httpx.Client(base_url=server.url, auth=auth, timeout=5) as client:
        with pytest.raises(ApprovalPending) as caught:
            client.post("/crm/contacts", json=PAYLOAD)
        pending = caught.value
        operator = when(
            lambda: server.polls() >= 2,
            lambda: server.decide(pending.approval_id, approve=True),
        )
        auth.wait_for_approval_sync(pending, timeout=10, **FAST)
        operator.join()
        response = client.post("/crm/contacts", json=PAYLOAD, headers=pending.retry_headers)
    assert response.status_code == 200
    assert server.forwarded() == 1


@pytest.mark.anyio
async def test_a_denial_ends_the_wait_and_the_retry(
    server: ApprovalServer, private_dir: Path
) -> None:
    auth = await server.issue(private_dir)
    async with httpx.AsyncClient(base_url=server.url, auth=auth, timeout=5) as client:
        with pytest.raises(ApprovalPending) as caught:
            await client.post("/crm/contacts", json=PAYLOAD)
        pending = caught.value
        operator = when(
            lambda: server.polls() >= 1,
            lambda: server.decide(pending.approval_id, approve=False),
        )
        with pytest.raises(ApprovalDenied) as denied:
            await auth.wait_for_approval(pending, timeout=10, **FAST)
        operator.join()
        with pytest.raises(ApprovalDenied) as retried:
            await client.post("/crm/contacts", json=PAYLOAD, headers=pending.retry_headers)
    assert denied.value.approval_id == retried.value.approval_id == pending.approval_id
    assert retried.value.reason == "approval_denied"
    assert isinstance(denied.value, ApprovalRefused)
    assert server.forwarded() == 0


@pytest.mark.anyio
async def test_an_expired_approval_ends_the_wait(server: ApprovalServer, private_dir: Path) -> None:
    auth = await server.issue(private_dir)
    async with httpx.AsyncClient(base_url=server.url, auth=auth, timeout=5) as client:
        with pytest.raises(ApprovalPending) as caught:
            await client.post("/crm/contacts", json=PAYLOAD)
        server.clock.advance(timedelta(hours=1))
        with pytest.raises(ApprovalExpired) as expired:
            await auth.wait_for_approval(caught.value, timeout=10, **FAST)
        with pytest.raises(ApprovalExpired):
            await client.post("/crm/contacts", json=PAYLOAD, headers=caught.value.retry_headers)
    assert expired.value.reason == "approval_expired"


@pytest.mark.anyio
async def test_the_wait_times_out_while_pending(server: ApprovalServer, private_dir: Path) -> None:
    auth = await server.issue(private_dir)
    async with httpx.AsyncClient(base_url=server.url, auth=auth, timeout=5) as client:
        with pytest.raises(ApprovalPending) as caught:
            await client.post("/crm/contacts", json=PAYLOAD)
    started = time.monotonic()
    with pytest.raises(ApprovalTimeout) as timed_out:
        await auth.wait_for_approval(caught.value, timeout=0.3, **FAST)
    assert 0.3 <= time.monotonic() - started < 3
    assert isinstance(timed_out.value, TimeoutError)
    assert "still pending" in str(timed_out.value)
    polls = server.polls()
    # it polled, and backed off rather than busy-looping (at most one poll per 10 ms over the
    # 0.3 s, and fewer once the backoff grows); a loaded machine may fit only one poll in
    assert 1 <= polls <= 40
    await server.adecide(caught.value.approval_id, approve=True)  # a later wait still works
    await auth.wait_for_approval(caught.value, timeout=5, **FAST)


@pytest.mark.anyio
async def test_another_body_is_not_the_approved_call(
    server: ApprovalServer, private_dir: Path
) -> None:
    auth = await server.issue(private_dir)
    async with httpx.AsyncClient(base_url=server.url, auth=auth, timeout=5) as client:
        with pytest.raises(ApprovalPending) as caught:
            await client.post("/crm/contacts", json=PAYLOAD)
        await server.adecide(caught.value.approval_id, approve=True)
        with pytest.raises(ApprovalRefused) as mismatch:
            await client.post(
                "/crm/contacts", json={"name": "Mallory"}, headers=caught.value.retry_headers
            )
    assert mismatch.value.reason == "approval_mismatch"
    assert type(mismatch.value) is ApprovalRefused
    assert server.forwarded() == 0


@pytest.mark.anyio
async def test_polls_renew_the_key_and_reach_outside_the_resource_url(
    server: ApprovalServer, private_dir: Path
) -> None:
    auth = await server.issue(private_dir, resource_url=server.url + "/crm")
    async with httpx.AsyncClient(base_url=server.url, auth=auth, timeout=5) as client:
        with pytest.raises(ApprovalPending) as caught:
            await client.post("/crm/contacts", json=PAYLOAD)
    server.clock.advance(0.9 * LIFETIME)  # renewal due; the approval is still pending
    before = auth.credentials.access_key
    await server.adecide(caught.value.approval_id, approve=True)
    await auth.wait_for_approval(caught.value, timeout=5, **FAST)
    assert auth.refreshes == 1
    assert auth.credentials.access_key != before
    assert server.calls.count("POST", "/oauth/token", 200) == 1


@pytest.mark.anyio
async def test_the_servers_approval_uri_is_used(private_dir: Path) -> None:
    with ApprovalServer(status_uri=True) as server:
        auth = await server.issue(private_dir)
        async with httpx.AsyncClient(base_url=server.url, auth=auth, timeout=5) as client:
            with pytest.raises(ApprovalPending) as caught:
                await client.post("/crm/contacts", json=PAYLOAD)
        pending = caught.value
        assert pending.approval_uri == f"{server.url}/oauth/approvals/{pending.approval_id}"
        await server.adecide(pending.approval_id, approve=True)
        await auth.wait_for_approval(pending, timeout=5, **FAST)


# a scripted server: what a real guard never sends

APPROVAL_ID = "apr_Yq7Lm2Pz9Rt4Wx1Ks8Dv3N"  # mixed: no run of one letter in a logged URL


@dataclass
class Script:
    """Answers POST /crm with a held-back call and the status endpoint from a script."""

    held: tuple[int, list[tuple[bytes, bytes]], bytes] = (403, [], b"{}")
    answers: deque[tuple[int, list[tuple[bytes, bytes]], bytes]] = field(default_factory=deque)
    polls: list[dict[str, str]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.paths.append(scope["path"])
        if scope["method"] == "GET" and "/approvals/" in scope["path"]:
            self.polls.append(headers)
            status, extra, body = self.answers.popleft() if self.answers else approved()
        else:
            status, extra, body = self.held
        raw = [(b"content-type", b"application/json"), *extra]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})


def state(name: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    body = f'{{"approval_id":"{APPROVAL_ID}","state":"{name}","expires_at":null}}'
    return 200, [], body.encode()


def approved() -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    return state("approved")


def scripted_auth(url: str) -> AgentAuth:
    now = datetime.now(timezone.utc)
    credentials = AgentCredentials(
        access_key=Secret("ag_at_" + "a" * 30),
        refresh_key=Secret("ag_rt_" + "r" * 30),
        issued_at=now,
        expires_at=now + timedelta(hours=1),
        token_url=url + "/oauth/token",
        token_type="DPoP",
        dpop_key=DPoPKey.generate(),
    )
    return AgentAuth(credentials)


def held(approval_uri: str | None) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    uri = f',"approval_uri":"{approval_uri}"' if approval_uri else ""
    body = (
        '{"error":"approval_required","reason":"approval_required",'
        f'"approval_id":"{APPROVAL_ID}","expires_at":"2099-01-01T00:00:00Z"{uri}}}'
    )
    return 403, [(b"agentguard-approval", APPROVAL_ID.encode())], body.encode()


@pytest.mark.anyio
async def test_outages_are_waited_out_with_retry_after_and_every_poll_is_signed() -> None:
    script = Script(held=held(None))
    script.answers.extend(
        [
            (503, [(b"retry-after", b"0")], b"{}"),
            (429, [], b"{}"),
            state("pending"),
            approved(),
        ]
    )
    with LoopbackServer(script) as server:
        auth = scripted_auth(server.url)
        async with httpx.AsyncClient(base_url=server.url, auth=auth, timeout=5) as client:
            with pytest.raises(ApprovalPending) as caught:
                await client.post("/crm/contacts", json=PAYLOAD)
        await auth.wait_for_approval(caught.value, timeout=10, **FAST)
    assert len(script.polls) == 4
    assert all(p["authorization"] == "DPoP ag_at_" + "a" * 30 for p in script.polls)
    assert len({p["dpop"] for p in script.polls}) == 4  # a fresh proof each time
    assert script.paths[-1] == f"/oauth/approvals/{APPROVAL_ID}"


@pytest.mark.anyio
@pytest.mark.parametrize(
    "uri",
    [
        "http://attacker.example/oauth/approvals/" + APPROVAL_ID,  # another origin
        "/crm/everything-else",  # same origin, not this approval's path
    ],
)
async def test_an_untrusted_approval_uri_is_ignored(uri: str) -> None:
    script = Script(held=held(uri))
    with LoopbackServer(script) as server:
        auth = scripted_auth(server.url)
        async with httpx.AsyncClient(base_url=server.url, auth=auth, timeout=5) as client:
            with pytest.raises(ApprovalPending) as caught:
                await client.post("/crm/contacts", json=PAYLOAD)
        await auth.wait_for_approval(caught.value, timeout=10, **FAST)
    assert script.paths[-1] == f"/oauth/approvals/{APPROVAL_ID}"


@pytest.mark.anyio
async def test_a_same_origin_approval_uri_naming_the_approval_is_polled() -> None:
    script = Script(held=held("/gate/approvals/" + APPROVAL_ID))
    with LoopbackServer(script) as server:
        auth = scripted_auth(server.url)
        async with httpx.AsyncClient(base_url=server.url, auth=auth, timeout=5) as client:
            with pytest.raises(ApprovalPending) as caught:
                await client.post("/crm/contacts", json=PAYLOAD)
        assert caught.value.approval_uri == f"{server.url}/gate/approvals/{APPROVAL_ID}"
        await auth.wait_for_approval(caught.value, timeout=10, **FAST)
    assert script.paths[-1] == f"/gate/approvals/{APPROVAL_ID}"


@pytest.mark.anyio
async def test_a_refused_poll_stops_the_wait() -> None:
    script = Script(held=held(None))
    script.answers.append((401, [], b'{"error":"invalid_dpop_proof"}'))
    with LoopbackServer(script) as server:
        auth = scripted_auth(server.url)
        async with httpx.AsyncClient(base_url=server.url, auth=auth, timeout=5) as client:
            with pytest.raises(ApprovalPending) as caught:
                await client.post("/crm/contacts", json=PAYLOAD)
        with pytest.raises(ApprovalWaitFailed) as failed:
            await auth.wait_for_approval(caught.value, timeout=10, **FAST)
    assert failed.value.status == 401
    assert "invalid_dpop_proof" in str(failed.value)
    assert "ag_at_" not in str(failed.value)


@pytest.mark.anyio
async def test_other_403s_are_responses_and_their_bodies_stay_unread() -> None:
    script = Script(held=(403, [], b'{"error":"insufficient_scope"}'))
    with LoopbackServer(script) as server:
        auth = scripted_auth(server.url)
        async with httpx.AsyncClient(base_url=server.url, auth=auth, timeout=5) as client:
            async with client.stream("POST", "/crm/contacts", json=PAYLOAD) as response:
                assert response.status_code == 403
                assert not response.is_stream_consumed
            script.held = (403, [(b"agentguard-approval", b"../../token")], b"{}")
            response = await client.post("/crm/contacts", json=PAYLOAD)  # malformed id
            assert response.status_code == 403


def test_unknown_approval_ends_the_wait_sync() -> None:
    script = Script(held=held(None))
    script.answers.append(
        (404, [], b'{"error":"not_found","reason":"unknown_approval","error_description":"x"}')
    )
    with LoopbackServer(script) as server:
        auth = scripted_auth(server.url)
        with (
            httpx.Client(base_url=server.url, auth=auth, timeout=5) as client,
            pytest.raises(ApprovalPending) as caught,
        ):
            client.post("/crm/contacts", json=PAYLOAD)
        with pytest.raises(ApprovalRefused) as refused:
            auth.wait_for_approval_sync(caught.value, timeout=10, **FAST)
    assert refused.value.reason == "unknown_approval"


def test_the_status_endpoint_unreachable_times_out() -> None:
    auth = scripted_auth(f"http://127.0.0.1:{free_port()}")
    pending = ApprovalPending(APPROVAL_ID)
    with pytest.raises(ApprovalTimeout) as timed_out:
        auth.wait_for_approval_sync(pending, timeout=0.2, **FAST)
    assert "no answer" in str(timed_out.value)
    assert timed_out.value.status is None
