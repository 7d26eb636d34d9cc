"""Streaming, echo detection, timeouts and upstream failures, with the gateway on a socket."""

from __future__ import annotations

import base64
import hashlib
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from agentguard import (
    CredentialOwner,
    CredentialScope,
    Guard,
    IssuedKeys,
    Placement,
    ServiceConfig,
    ServiceTimeouts,
)
from agentguard.asgi._proxy import ProxyApp, ResponseWithheld
from agentguard.credentials import CredentialSwapper, CredentialVault, KeyRing
from agentguard.dpop import DPoPKey, DPoPPolicy
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock, make_user
from tests.conftest import CANARY
from tests.support.servers import LoopbackServer, free_port

pytestmark = pytest.mark.anyio
Scope = dict[str, Any]


async def read_all(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += bytes(message.get("body", b""))
        if not message.get("more_body", False):
            return body


def responder(status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> Any:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await read_all(receive)
        await send({"type": "http.response.start", "status": status, "headers": headers or []})
        await send({"type": "http.response.body", "body": body})

    return app


@dataclass
class Proxied:
    guard: Guard
    store: MemoryStore
    keys: IssuedKeys
    app: Starlette
    proxy: ProxyApp
    dpop_key: DPoPKey | None = None

    @property
    def key(self) -> str:
        return self.keys.access_key.reveal()

    def headers(self) -> dict[str, str]:
        return {"X-Api-Key": self.key}


@asynccontextmanager
async def proxied(
    base_url: str, *, timeouts: ServiceTimeouts | None = None, dpop: bool = False, origin: str = ""
) -> AsyncIterator[Proxied]:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    service = ServiceConfig(
        name="crm",
        base_url=base_url,
        placement=Placement.HEADER,
        parameter="X-Api-Key",
        allow_insecure_http=True,
        timeouts=timeouts or ServiceTimeouts(),
    )
    vault = CredentialVault(store, KeyRing.generate(), clock=clock)
    policy = DPoPPolicy(public_origin=origin) if dpop else None
    guard = Guard(
        store, clock=clock, services=[service], swapper=CredentialSwapper(vault), dpop=policy
    )
    user = await make_user(store, grants="crm:write")
    key = DPoPKey.generate() if dpop else None
    keys = await guard.issuer.issue(user.id, "ws-1", jkt=key.thumbprint if key else None)
    await vault.put("crm", CredentialOwner.USER, user.id, CANARY, scope=CredentialScope.USER)
    proxy = ProxyApp(guard, "crm")

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        await proxy.aclose()  # close the pooled client in the loop that created it

    app = Starlette(routes=[Mount("/crm", app=proxy)], lifespan=lifespan)
    try:
        yield Proxied(guard, store, keys, app, proxy, key)
    finally:
        await proxy.aclose()


async def call(app: Starlette, method: str, path: str, **kwargs: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:
        return await client.request(method, path, **kwargs)


@pytest.mark.parametrize(
    "body",
    [
        f'{{"error": "bad key {CANARY}"}}'.encode(),
        base64.b64encode(CANARY.encode()),
        CANARY.encode().hex().encode(),
        f'{{"k": "{CANARY[:12]}..."}}'.encode(),
    ],
    ids=["raw", "base64", "hex", "prefix"],
)
async def test_echoed_credential_is_withheld(body: bytes) -> None:
    with LoopbackServer(responder(200, body)) as upstream:
        async with proxied(upstream.url) as setup:
            response = await call(setup.app, "GET", "/crm/x", headers=setup.headers())
    assert response.status_code == 502
    assert response.json()["reason"] == "secret_echo_blocked"
    assert CANARY not in response.text
    events = [e.event() for e in await setup.store.read()]
    assert events[-1]["reason"] == "secret_echo_blocked"


async def test_echo_in_a_response_header_is_withheld() -> None:
    app = responder(200, b"{}", [(b"x-debug-key", CANARY.encode())])
    with LoopbackServer(app) as upstream:
        async with proxied(upstream.url) as setup:
            response = await call(setup.app, "GET", "/crm/x", headers=setup.headers())
    assert response.status_code == 502
    assert CANARY not in str(response.headers)


def streaming_upstream(chunks: list[bytes], gate: threading.Event | None = None) -> Any:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await read_all(receive)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        for index, chunk in enumerate(chunks):
            if gate is not None and index == len(chunks) - 1:
                await anyio.to_thread.run_sync(gate.wait, 10)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    return app


def serve_gateway(setup: Proxied) -> LoopbackServer:
    return LoopbackServer(setup.app, lifespan="on")


async def test_large_response_streams_without_full_buffering() -> None:
    gate = threading.Event()
    chunks = [bytes([65 + i % 26]) * 65536 for i in range(64)]  # 4 MiB, last chunk gated
    with LoopbackServer(streaming_upstream(chunks, gate)) as upstream:
        async with proxied(upstream.url) as setup:
            with serve_gateway(setup) as gateway:
                received = 0
                async with (
                    httpx.AsyncClient(timeout=10) as client,
                    client.stream(
                        "GET", gateway.url + "/crm/big", headers=setup.headers()
                    ) as response,
                ):
                    assert response.status_code == 200
                    async for piece in response.aiter_bytes():
                        received += len(piece)
                        if received >= 1024 * 1024 and not gate.is_set():
                            gate.set()  # only now may the upstream finish: we got 1 MiB first
                assert gate.is_set()
                assert received == sum(len(c) for c in chunks)


async def test_credential_split_across_stream_chunks_cuts_the_stream() -> None:
    filler = [b"x" * 70000]
    middle = len(CANARY) // 2
    chunks = [*filler, CANARY[:middle].encode(), CANARY[middle:].encode(), b"tail"]
    with LoopbackServer(streaming_upstream(chunks)) as upstream:
        async with proxied(upstream.url) as setup:
            with serve_gateway(setup) as gateway:
                received = bytearray()
                statuses: list[int] = []

                async def read() -> None:
                    async with (
                        httpx.AsyncClient(timeout=10) as client,
                        client.stream(
                            "GET", gateway.url + "/crm/big", headers=setup.headers()
                        ) as response,
                    ):
                        statuses.append(response.status_code)
                        async for piece in response.aiter_bytes():
                            received.extend(piece)

                # When the pieces reach the proxy together, the echo is found before the answer
                # starts (a whole 502); otherwise the started stream is cut. Never the secret.
                try:
                    await read()
                except httpx.HTTPError:
                    assert statuses == [200]
                else:
                    assert statuses == [502], statuses
                assert CANARY[:12].encode() not in received
                assert CANARY.encode() not in received
                events = [e.event() for e in await setup.store.read()]
                assert events[-1]["reason"] == "secret_echo_blocked"


async def test_large_upload_streams_upstream() -> None:
    seen: dict[str, Any] = {}

    async def sink(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        digest, size, parts = hashlib.sha256(), 0, 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            digest.update(chunk)
            size += len(chunk)
            parts += 1
            if not message.get("more_body", False):
                break
        seen.update(size=size, digest=digest.hexdigest(), parts=parts)
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    payload = b"0123456789abcdef" * (3 * 65536)  # 3 MiB

    async def body() -> AsyncIterator[bytes]:
        for start in range(0, len(payload), 65536):
            yield payload[start : start + 65536]

    with LoopbackServer(sink) as upstream:
        async with proxied(upstream.url) as setup:
            with serve_gateway(setup) as gateway:
                async with httpx.AsyncClient(timeout=10) as client:
                    response = await client.post(
                        gateway.url + "/crm/upload", content=body(), headers=setup.headers()
                    )
    assert response.status_code == 201
    assert seen["size"] == len(payload)
    assert seen["digest"] == hashlib.sha256(payload).hexdigest()
    assert seen["parts"] > 1  # it arrived in pieces, not as one buffered blob


async def test_slow_upstream_is_504() -> None:
    async def slow(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await anyio.sleep(2)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"late"})

    with LoopbackServer(slow) as upstream:
        async with proxied(upstream.url, timeouts=ServiceTimeouts(read=0.2)) as setup:
            response = await call(setup.app, "GET", "/crm/x", headers=setup.headers())
    assert response.status_code == 504
    assert response.json() == {
        "error": "gateway_timeout",
        "error_description": "crm: the service did not answer in time",
        "reason": "upstream_timeout",
        "service": "crm",
    }


async def test_unreachable_upstream_is_502() -> None:
    async with proxied(f"http://127.0.0.1:{free_port()}") as setup:
        response = await call(setup.app, "GET", "/crm/x", headers=setup.headers())
    assert response.status_code == 502
    body = response.json()
    assert (body["reason"], body["service"]) == ("upstream_unreachable", "crm")
    assert CANARY not in response.text


async def test_redirects_are_not_followed() -> None:
    app = responder(302, b"", [(b"location", b"https://elsewhere.example/steal")])
    with LoopbackServer(app) as upstream:
        async with proxied(upstream.url) as setup:
            response = await call(setup.app, "GET", "/crm/x", headers=setup.headers())
    assert response.status_code == 302
    assert response.headers["location"] == "https://elsewhere.example/steal"


async def test_dpop_bound_key_in_a_vendor_header() -> None:
    app = responder(200, b'{"ok": true}')
    with LoopbackServer(app) as upstream:
        async with proxied(upstream.url, dpop=True, origin="http://gw.test") as setup:
            assert setup.dpop_key is not None
            proof = setup.dpop_key.proof(
                "GET",
                "http://gw.test/crm/x",
                access_key=setup.key,
                iat=int(setup.guard.clock.now().timestamp()),
            )
            ok = await call(setup.app, "GET", "/crm/x", headers={**setup.headers(), "DPoP": proof})
            stolen = await call(setup.app, "GET", "/crm/x", headers=setup.headers())
    assert ok.status_code == 200
    assert (stolen.status_code, stolen.json()["reason"]) == (401, "dpop_binding_mismatch")


async def test_websocket_is_not_proxied() -> None:
    async with proxied("http://127.0.0.1:9") as setup:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "websocket.connect"}

        async def send(message: Any) -> None:
            sent.append(message)

        await setup.proxy({"type": "websocket", "path": "/x", "headers": []}, receive, send)
    assert sent[0]["type"] == "websocket.close"


def test_response_withheld_names_the_error() -> None:
    from agentguard.errors import BadGateway, Reason

    error = BadGateway("crm", reason=Reason.SECRET_ECHO_BLOCKED)
    assert str(ResponseWithheld(error)) == error.description
    assert CANARY not in repr(ResponseWithheld(error))
