"""Websockets through ProxyApp, over real sockets: a websockets client, the gateway under
uvicorn, and a Starlette websocket vendor under uvicorn that records every handshake.

Services: ``crm`` (key in ``X-Api-Key``; websockets need write), ``feed`` (key in the
``api_key`` query parameter; its rule makes websockets a read), ``bot`` (bearer; the DPoP test).
``writer`` holds crm:write feed:read bot:write; ``reader`` holds crm:read feed:read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket

from agentguard import (
    CredentialOwner,
    CredentialScope,
    Guard,
    IssuedKeys,
    Level,
    Placement,
    ServiceConfig,
    ServiceRoute,
)
from agentguard._stream_lease import StreamLease
from agentguard.asgi import ProxyApp
from agentguard.credentials import CredentialSwapper, CredentialVault, KeyRing
from agentguard.dpop import DPoPKey, DPoPPolicy
from agentguard.errors import InvalidToken, Reason
from agentguard.review import ReviewContext, Verdict
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock, make_user
from tests.conftest import CANARY
from tests.support.servers import LoopbackServer, bound_socket

pytest.importorskip("aiohttp")
pytest.importorskip("websockets")  # uvicorn serves websockets with it; the tests' client too

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

pytestmark = pytest.mark.anyio

CRM_KEY = f"crm-ws-{CANARY}"
FEED_KEY = f"feed-ws-{CANARY}"
BOT_KEY = f"bot-ws-{CANARY}"
DEADLINE = 5.0
_QUIET = logging.getLogger("tests.proxy.websocket_client")  # its debug lines show the keys sent
_QUIET.setLevel(logging.INFO)


@dataclass
class Handshake:
    path: str
    query: str
    headers: list[tuple[bytes, bytes]]
    subprotocols: list[str]


@dataclass
class Vendor:
    """Echoes what it gets; ``leak`` sends the CRM key back, ``close:CODE`` closes with CODE,
    ``close-leak`` closes with the key as reason, ``big:N`` sends N bytes."""

    url: str = ""
    handshakes: list[Handshake] = field(default_factory=list)
    received: list[str | bytes] = field(default_factory=list)
    closes: list[int] = field(default_factory=list)

    async def endpoint(self, socket: WebSocket) -> None:
        offered = list(socket.scope.get("subprotocols", []))
        self.handshakes.append(
            Handshake(socket.url.path, socket.url.query, list(socket.scope["headers"]), offered)
        )
        if socket.url.path.endswith("/moved"):
            location = {"location": "http://127.0.0.1:9/steal"}
            await socket.send_denial_response(Response(status_code=307, headers=location))
            return
        if socket.url.path.endswith("/unauthorized"):
            await socket.send_denial_response(Response(f"bad key {CRM_KEY}", status_code=401))
            return
        if socket.url.path.endswith("/refuse"):
            await socket.close()  # before accepting: uvicorn answers 403
            return
        await socket.accept(subprotocol=offered[0] if offered else None)
        while True:
            message = await socket.receive()
            if message["type"] == "websocket.disconnect":
                self.closes.append(message.get("code", 1005))
                return
            text, data = message.get("text"), message.get("bytes")
            self.received.append(text if text is not None else data or b"")
            if text == "leak":
                await socket.send_text(f"your key is {CRM_KEY}")
            elif text == "close-leak":
                await socket.close(4002, f"bad key {CRM_KEY}")
            elif text is not None and text.startswith("close:"):
                await socket.close(int(text[6:]), "bye")
            elif text is not None and text.startswith("big:"):
                await socket.send_bytes(b"x" * int(text[4:]))
            elif text is not None:
                await socket.send_text(text)
            else:
                await socket.send_bytes(data or b"")


async def ticks(request: Request) -> StreamingResponse:
    """An HTTP event stream that goes on for ten seconds unless cut."""

    async def events() -> AsyncIterator[bytes]:
        for tick in range(200):
            yield f"data: {tick}\n\n".encode()
            await anyio.sleep(0.05)

    return StreamingResponse(events(), media_type="text/event-stream")


@pytest.fixture(scope="module")
def vendor() -> Iterator[Vendor]:
    found = Vendor()
    app = Starlette(
        routes=[Route("/v2/ticks", ticks), WebSocketRoute("/{rest:path}", found.endpoint)]
    )
    with LoopbackServer(app) as server:
        found.url = server.url
        yield found


@pytest.fixture(autouse=True)
def _fresh(vendor: Vendor) -> None:
    vendor.handshakes.clear()
    vendor.received.clear()
    vendor.closes.clear()


@dataclass
class Gateway:
    origin: str
    guard: Guard
    store: MemoryStore
    keys: dict[str, IssuedKeys]
    dpop_key: DPoPKey
    leases: list[tuple[StreamLease, asyncio.AbstractEventLoop]]

    def key(self, who: str = "writer") -> str:
        return self.keys[who].access_key.reveal()

    def url(self, path: str) -> str:
        return "ws" + self.origin[len("http") :] + path

    def connect(self, path: str, headers: dict[str, str] | None = None, **options: Any) -> Any:
        return connect(
            self.url(path), additional_headers=headers, proxy=None, logger=_QUIET, **options
        )

    async def audited(self, which: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        """The audit events ``which`` picks, once there is one (under the deadline)."""
        with anyio.fail_after(DEADLINE):
            while True:
                found = [e.event() for e in await self.store.read() if which(e.event())]
                if found:
                    return found
                await anyio.sleep(0.01)

    async def denied(self) -> list[dict[str, Any]]:
        """The proxy's refusals after a decision."""
        return await self.audited(lambda event: event.get("action") == "proxy.upstream")

    def cut(self, error: InvalidToken) -> None:
        """Cut the only open socket's lease, on the gateway's own event loop."""
        lease, loop = self.leases[0]
        loop.call_soon_threadsafe(lease.cut, error)


@contextlib.asynccontextmanager
async def gateway(vendor: Vendor, **options: Any) -> AsyncIterator[Gateway]:
    sock = bound_socket()
    origin = f"http://127.0.0.1:{sock.getsockname()[1]}"
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    vault = CredentialVault(store, KeyRing.generate(), clock=clock)
    services = [
        ServiceConfig(
            name="crm",
            base_url=vendor.url + "/v2",
            placement=Placement.HEADER,
            parameter="X-Api-Key",
            allow_insecure_http=True,
        ),
        ServiceConfig(
            name="feed",
            base_url=vendor.url + "/feed",
            placement=Placement.QUERY,
            parameter="api_key",
            allow_insecure_http=True,
            routes=(ServiceRoute(path="/", methods={"WEBSOCKET": Level.READ}),),
        ),
        ServiceConfig(name="bot", base_url=vendor.url + "/bot", allow_insecure_http=True),
    ]
    swapper = CredentialSwapper(vault, clock=clock)
    guard = Guard(
        store, clock=clock, services=services, swapper=swapper,
        dpop=DPoPPolicy(public_origin=origin),
    )  # fmt: skip
    swapper.audit = guard.audit
    dpop_key = DPoPKey.generate()
    keys = {}
    for who, grants in (
        ("writer", "crm:write feed:read bot:write"),
        ("reader", "crm:read feed:read"),
    ):
        await make_user(store, user_id=who, grants=grants)
        keys[who] = await guard.issuer.issue(who, "ws-1")
        for name, secret in (("crm", CRM_KEY), ("feed", FEED_KEY), ("bot", BOT_KEY)):
            await vault.put(name, CredentialOwner.USER, who, secret, scope=CredentialScope.USER)
    keys["bound"] = await guard.issuer.issue("writer", "ws-1", jkt=dpop_key.thumbprint)
    leases: list[tuple[StreamLease, asyncio.AbstractEventLoop]] = []
    hold = guard.streams.hold

    @contextlib.asynccontextmanager
    async def captured(who: Any, *, key: str | None) -> AsyncIterator[StreamLease]:
        async with hold(who, key=key) as lease:
            leases.append((lease, asyncio.get_running_loop()))
            yield lease

    guard.streams.hold = captured  # type: ignore[method-assign]
    proxies = [ProxyApp(guard, service.name, **options) for service in services]

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        for proxy in proxies:
            await proxy.aclose()

    app = Starlette(
        routes=[Mount(f"/{proxy.service.name}", app=proxy) for proxy in proxies],
        lifespan=lifespan,
    )
    with LoopbackServer(app, lifespan="on", sock=sock):
        yield Gateway(origin, guard, store, keys, dpop_key, leases)


async def until(condition: Callable[[], bool]) -> None:
    with anyio.fail_after(DEADLINE):
        while not condition():  # noqa: ASYNC110 - state another thread (a server) changes
            await anyio.sleep(0.01)


async def closed(socket: ClientConnection) -> tuple[int, str]:
    """The close the gateway sent, waited for under the deadline."""
    with anyio.fail_after(DEADLINE):
        try:
            while True:
                await socket.recv()
        except ConnectionClosed as ended:
            received = ended.rcvd
    if received is None:
        raise AssertionError("the connection ended without a close frame")
    return received.code, received.reason


def seen(handshake: Handshake) -> bytes:
    return b"\n".join(name + b": " + value for name, value in handshake.headers)


async def test_messages_round_trip_with_only_the_real_credential_upstream(vendor: Vendor) -> None:
    async with gateway(vendor) as gw:
        key = gw.key()
        headers = {"X-Api-Key": key, "Authorization": f"Bearer {key}", "Cookie": "s=1"}
        offered = [Subprotocol("v2.chat"), Subprotocol("v1.chat")]
        async with gw.connect("/crm/rooms/7?q=1", headers, subprotocols=offered) as socket:
            assert socket.subprotocol == "v2.chat"
            await socket.send("hello")
            assert await socket.recv() == "hello"
            await socket.send(b"\x00\x01binary")
            assert await socket.recv() == b"\x00\x01binary"
    (handshake,) = vendor.handshakes
    assert (handshake.path, handshake.query) == ("/v2/rooms/7", "q=1")
    assert handshake.subprotocols == ["v2.chat", "v1.chat"]
    assert dict(handshake.headers)[b"x-api-key"] == CRM_KEY.encode()
    assert key.encode() not in seen(handshake)
    names = {name for name, _ in handshake.headers}
    assert not names & {b"authorization", b"dpop", b"cookie"}


async def test_query_placement_and_a_read_only_feed(vendor: Vendor) -> None:
    async with gateway(vendor) as gw:
        reader = gw.key("reader")
        async with gw.connect(f"/feed/ticks?api_key={reader}&n=2") as socket:
            await socket.send("tick")
            assert await socket.recv() == "tick"
    (handshake,) = vendor.handshakes
    assert handshake.query == "n=2&api_key=" + FEED_KEY
    assert reader.encode() not in seen(handshake) + handshake.query.encode()


async def test_a_dpop_bound_key_opens_a_bearer_socket(vendor: Vendor) -> None:
    async with gateway(vendor) as gw:
        key = gw.key("bound")
        iat = int(gw.guard.clock.now().timestamp())
        proof = gw.dpop_key.proof("GET", gw.origin + "/bot/live", access_key=key, iat=iat)
        async with gw.connect("/bot/live", {"Authorization": f"DPoP {key}", "DPoP": proof}) as s:
            await s.send("ping")
            assert await s.recv() == "ping"
        with pytest.raises(InvalidStatus) as stolen:  # the same key without its proof
            await gw.connect("/bot/live", {"Authorization": f"Bearer {key}"}).__aenter__()
    assert stolen.value.response.status_code == 401
    (handshake,) = vendor.handshakes
    assert dict(handshake.headers)[b"authorization"] == f"Bearer {BOT_KEY}".encode()
    assert b"dpop" not in {name for name, _ in handshake.headers}
    assert key.encode() not in seen(handshake)


@pytest.mark.parametrize(
    ("path", "who", "status", "error"),
    [
        ("/crm/rooms", None, 401, None),
        ("/crm/rooms", "ag_at_notakey", 401, "invalid_token"),
        ("/crm/rooms", "reader", 403, "insufficient_scope"),
        ("/crm/%2e%2e/admin", "writer", 400, "invalid_request"),
        ("/crm/rooms/..%2fadmin", "writer", 400, "invalid_request"),
    ],
    ids=["no-key", "bad-key", "read-only-key", "dot-segment", "encoded-slash"],
)
async def test_refused_before_accept_with_no_upstream_connection(
    vendor: Vendor, path: str, who: str | None, status: int, error: str | None
) -> None:
    async with gateway(vendor) as gw:
        key = gw.key(who) if who in gw.keys else who
        headers = {"X-Api-Key": key} if key is not None else {}
        with pytest.raises(InvalidStatus) as refused:
            await gw.connect(path, headers).__aenter__()
    response = refused.value.response
    assert response.status_code == status
    body = json.loads(response.body or b"{}")
    assert body.get("error") == error
    if status == 401:
        challenges = response.headers.get_all("www-authenticate")
        assert any(value.startswith('Bearer realm="agentguard"') for value in challenges)
    assert vendor.handshakes == []


async def test_close_codes_pass_both_ways(vendor: Vendor) -> None:
    async with gateway(vendor) as gw:
        async with gw.connect("/crm/rooms", {"X-Api-Key": gw.key()}) as socket:
            await socket.send("close:4001")
            assert await closed(socket) == (4001, "bye")
        async with gw.connect("/crm/rooms", {"X-Api-Key": gw.key()}) as socket:
            await socket.send("hi")
            assert await socket.recv() == "hi"
            await socket.close(4000, "done")
        await until(lambda: 4000 in vendor.closes)


async def test_an_oversized_message_closes_with_1009(vendor: Vendor) -> None:
    async with gateway(vendor, websocket_max_bytes=1024) as gw:
        async with gw.connect("/crm/rooms", {"X-Api-Key": gw.key()}) as socket:
            await socket.send(b"x" * 1025)
            assert (await closed(socket))[0] == 1009
        await until(lambda: vendor.closes == [1001])
        assert vendor.received == []
        async with gw.connect("/crm/rooms", {"X-Api-Key": gw.key()}) as socket:
            await socket.send(b"x" * 1024)
            assert await socket.recv() == b"x" * 1024
            await socket.send("big:1025")  # from the vendor this time
            assert (await closed(socket))[0] == 1009


@pytest.mark.parametrize("trigger", ["leak", "close-leak"])
async def test_an_echoed_credential_closes_both_sides_and_is_audited(
    vendor: Vendor, trigger: str
) -> None:
    async with gateway(vendor) as gw:
        async with gw.connect("/crm/rooms", {"X-Api-Key": gw.key()}) as socket:
            await socket.send(trigger)
            assert await closed(socket) == (1008, "secret_echo_blocked")
        if trigger == "leak":
            await until(lambda: vendor.closes == [1008])
        denied = await gw.denied()
    assert [(e["decision"], e["reason"], e["actor"]["user"]) for e in denied] == [
        ("deny", "secret_echo_blocked", "writer")
    ]


async def test_a_cut_lease_closes_the_socket_with_1008(vendor: Vendor) -> None:
    async with gateway(vendor) as gw:
        async with gw.connect("/crm/rooms", {"X-Api-Key": gw.key()}) as socket:
            await socket.send("hi")
            assert await socket.recv() == "hi"
            assert len(gw.leases) == 1
            gw.cut(InvalidToken(reason=Reason.REVOKED))
            assert await closed(socket) == (1008, "revoked")
        await until(lambda: vendor.closes == [1001])
        assert gw.guard.streams.open_count == 0


async def test_revoking_the_key_closes_its_open_socket_and_the_cut_is_audited(
    vendor: Vendor,
) -> None:
    async with gateway(vendor) as gw:
        key_id = gw.keys["writer"].access.id
        async with gw.connect("/crm/rooms", {"X-Api-Key": gw.key()}) as socket:
            await socket.send("hi")
            assert await socket.recv() == "hi"
            await gw.guard.issuer.revoke(key_id=key_id)
            gw.guard.streams.changed(key_id=key_id)  # what the store's revocation feed says
            assert await closed(socket) == (1008, "revoked")
        await until(lambda: vendor.closes == [1001])
        cuts = await gw.audited(lambda e: (e.get("detail") or {}).get("stream") == "cut")
    assert [(e["reason"], e["actor"]["key_id"], e["service"], e["path"]) for e in cuts] == [
        ("revoked", key_id, "crm", "/crm/rooms")
    ]


async def test_a_key_of_ours_in_a_message_never_reaches_the_vendor(vendor: Vendor) -> None:
    async with gateway(vendor) as gw:
        async with gw.connect("/crm/rooms", {"X-Api-Key": gw.key()}) as socket:
            await socket.send(json.dumps({"note": gw.key("reader")}))
            assert await closed(socket) == (1008, "key_outside_credential_position")
        await until(lambda: vendor.closes == [1001])
    assert vendor.received == []


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/crm/moved", "upstream_protocol_error"),  # a redirect is never followed
        ("/crm/refuse", "upstream_protocol_error"),
        ("/crm/unauthorized", "upstream_rejected_credential"),
    ],
)
async def test_a_handshake_the_vendor_refuses_is_a_502(
    vendor: Vendor, path: str, reason: str
) -> None:
    async with gateway(vendor) as gw:
        with pytest.raises(InvalidStatus) as refused:
            await gw.connect(path, {"X-Api-Key": gw.key()}).__aenter__()
        denied = await gw.denied()
    response = refused.value.response
    assert (response.status_code, json.loads(response.body or b"{}")["reason"]) == (502, reason)
    assert CRM_KEY.encode() not in (response.body or b"")
    assert len(vendor.handshakes) == 1
    assert [event["reason"] for event in denied] == [reason]


def no_drops(context: ReviewContext, content: str) -> Verdict:
    if "DROP TABLE" in content:
        return Verdict.block("no-drops", "sql_in_message")
    return Verdict.allow("no-drops")


def hide_word(context: ReviewContext, content: str) -> Verdict:
    if "s3cr3t" in content:
        return Verdict.redact("hide", "word", content.replace("s3cr3t", "[hidden]"))
    return Verdict.allow("hide")


async def test_reviewers_see_each_message(vendor: Vendor) -> None:
    options = {"request_reviewers": [no_drops], "response_reviewers": [hide_word]}
    async with gateway(vendor, **options) as gw:
        async with gw.connect("/crm/rooms", {"X-Api-Key": gw.key()}) as socket:
            await socket.send("say s3cr3t")
            assert await socket.recv() == "say [hidden]"
            await socket.send("DROP TABLE contacts")
            assert await closed(socket) == (1008, "review_blocked")
        await until(lambda: vendor.closes == [1001])
        verdicts = await gw.audited(lambda event: event.get("action") == "review.verdict")
    assert vendor.received == ["say s3cr3t"]
    assert {event["reason"] for event in verdicts} >= {"sql_in_message", "word"}


async def test_an_http_stream_through_the_proxy_is_cut_by_the_same_lease(vendor: Vendor) -> None:
    async with gateway(vendor) as gw, httpx.AsyncClient(base_url=gw.origin) as client:
        key_id = gw.keys["writer"].access.id
        headers = {"X-Api-Key": gw.key()}
        async with client.stream("GET", "/crm/ticks", headers=headers) as response:
            assert response.status_code == 200
            received = response.aiter_bytes()
            assert (await received.__anext__()).startswith(b"data: 0")
            await gw.guard.issuer.revoke(key_id=key_id)
            gw.guard.streams.changed(key_id=key_id)
            body = b""
            with anyio.fail_after(DEADLINE), contextlib.suppress(httpx.HTTPError):
                async for chunk in received:
                    body += chunk
        cuts = await gw.audited(lambda e: (e.get("detail") or {}).get("stream") == "cut")
        events = [entry.event() for entry in await gw.store.read()]
    assert b"data: 199" not in body
    assert [(e["reason"], e["path"]) for e in cuts] == [("revoked", "/crm/ticks")]
    assert not [e for e in events if e["action"] == "proxy.upstream"]  # audited once, above
