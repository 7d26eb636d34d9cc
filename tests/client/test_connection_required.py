"""The runtime's side of ``connection_required``: the gateway's own refusal raises a typed
error with the service and the connect link; a vendor's look-alike ``403`` never does."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from agentguard import Guard, ServiceConfig
from agentguard._secret import Secret
from agentguard.asgi import ProxyApp
from agentguard.client import (
    AccountConnectionRequired,
    AgentAuth,
    AgentAuthError,
    AgentCredentials,
)
from agentguard.client._connections import connection_refusal
from agentguard.connect import ConnectedAccounts, OAuthClientConfig
from agentguard.credentials import CredentialSwapper, CredentialVault, KeyRing
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock, FakeUpstream, make_user
from tests.client.conftest import credentials_for
from tests.connect.accounts_fakes import DictStore, StubVendor, tokens_for
from tests.support.servers import LoopbackServer

GATEWAY = "https://gw.example"
CONNECT = GATEWAY + "/connect/crm"
OAUTH = OAuthClientConfig(
    client_id="agentguard-crm",
    authorization_endpoint="https://auth.crm.example/authorize",
    token_endpoint="https://auth.crm.example/token",
)


def _refusal(
    *, header: str | None = "crm", status: int = 403, **body: Any
) -> tuple[int, dict[str, str], bytes]:
    document = {
        "error": "connection_required",
        "error_description": "connect it",
        "reason": "connection_required",
        "service": "crm",
        "connect_uri": CONNECT,
        **body,
    }
    headers = {"content-type": "application/json"}
    if header is not None:
        headers["agentguard-connection"] = header
    return status, headers, json.dumps(document).encode()


def _auth(clock: FakeClock) -> AgentAuth:
    now = clock.now()
    credentials = AgentCredentials(
        access_key=Secret("ag_at_" + secrets.token_urlsafe(24)),
        refresh_key=Secret("ag_rt_" + secrets.token_urlsafe(24)),
        issued_at=now,
        expires_at=now + timedelta(hours=1),
        token_url="http://gw.test/oauth/token",
        token_type="Bearer",
    )
    return AgentAuth(credentials, clock=clock)


def _mock(answer: tuple[int, dict[str, str], bytes]) -> httpx.MockTransport:
    status, headers, body = answer

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, headers=headers, content=body)

    return httpx.MockTransport(handler)


def test_the_gateways_refusal_raises_with_service_and_link() -> None:
    clock = FakeClock()
    with (
        httpx.Client(transport=_mock(_refusal()), auth=_auth(clock)) as client,
        pytest.raises(AccountConnectionRequired) as raised,
    ):
        client.get("https://gw.example/crm/contacts")
    error = raised.value
    assert isinstance(error, AgentAuthError)
    assert (error.service, error.connect_uri, error.reason) == (
        "crm", CONNECT, "connection_required",
    )  # fmt: skip
    assert error.description == "connect it"
    assert CONNECT in str(error) and "crm" in str(error)
    assert "ag_at_" not in str(error) + repr(error)


@pytest.mark.anyio
async def test_the_async_client_raises_it_too_with_the_broken_reason() -> None:
    clock = FakeClock()
    answer = _refusal(reason="connection_broken")
    async with httpx.AsyncClient(transport=_mock(answer), auth=_auth(clock)) as client:
        with pytest.raises(AccountConnectionRequired) as raised:
            await client.get("https://gw.example/crm/contacts")
    assert raised.value.reason == "connection_broken"
    assert "broken" in str(raised.value)


@pytest.mark.parametrize(
    "answer",
    [
        _refusal(header=None),  # a vendor's 403 with the same body, no gateway header
        _refusal(error="insufficient_scope"),
        _refusal(header="crm", service="mail"),  # header and body disagree
        _refusal(header="CRM; x"),  # not a service name
        _refusal(status=401),
    ],
)
def test_anything_else_is_returned_as_a_response(answer: tuple[int, dict[str, str], bytes]) -> None:
    with httpx.Client(transport=_mock(answer), auth=_auth(FakeClock())) as client:
        response = client.get("http://gw.test/crm/contacts")
    assert response.status_code == answer[0]


@pytest.mark.parametrize(
    "uri",
    ["javascript:alert(1)", "/connect/crm", "https://user:pw@evil.example/", "https://x\n.example"],
)
def test_a_link_that_is_not_an_absolute_http_url_is_dropped(uri: str) -> None:
    assert _read(uri, "https://gw.example/crm/contacts") is None


def _read(connect_uri: str, requested: str | None) -> str | None:
    """The ``connect_uri`` kept from a refusal carrying ``connect_uri``, answering a request
    to ``requested`` (``None``: a response without its request)."""
    status, headers, body = _refusal(connect_uri=connect_uri)
    request = None if requested is None else httpx.Request("GET", requested)
    error = connection_refusal(
        httpx.Response(status, headers=headers, content=body, request=request)
    )
    assert error is not None and error.service == "crm"
    return error.connect_uri


@pytest.mark.parametrize(
    ("uri", "requested"),
    [
        (CONNECT, "https://gw.example/crm/contacts"),
        ("https://gw.example:443/connect/crm?x=1", "https://GW.example/crm"),
        ("https://gw.example:8443/connect/crm", "https://gw.example:8443/crm"),
        ("http://127.0.0.1:8080/connect/crm", "http://127.0.0.1:8080/crm"),
        ("http://localhost:8080/connect/crm", "http://localhost:8080/crm"),
        ("http://[::1]:8080/connect/crm", "http://[::1]:8080/crm"),
    ],
)
def test_a_link_on_the_gateways_origin_is_kept(uri: str, requested: str) -> None:
    assert _read(uri, requested) == uri


@pytest.mark.parametrize(
    ("uri", "requested"),
    [
        ("https://evil.example/connect/crm", "https://gw.example/crm"),  # another host
        ("https://gw.example.evil.example/connect/crm", "https://gw.example/crm"),
        ("https://gw.example:8443/connect/crm", "https://gw.example/crm"),  # another port
        ("http://gw.example/connect/crm", "https://gw.example/crm"),  # another scheme
        ("http://gw.example/connect/crm", "http://gw.example/crm"),  # http off loopback
        ("http://127.0.0.1:8081/connect/crm", "http://127.0.0.1:8080/crm"),
        ("http://localhost:8080/connect/crm", "http://127.0.0.1:8080/crm"),
        (CONNECT, None),  # the origin is not known
    ],
)
def test_a_link_off_the_gateways_origin_is_dropped(uri: str, requested: str | None) -> None:
    assert _read(uri, requested) is None


# Against the real gateway: the proxy marks its refusal, and drops a vendor's look-alike mark.


@pytest.fixture(scope="module")
def vendor_api() -> Iterator[tuple[FakeUpstream, LoopbackServer]]:
    async def look_alike(request: Any) -> tuple[int, list[tuple[str, str]], bytes]:
        _, headers, body = _refusal(connect_uri="https://evil.example/phish")
        return 403, list(headers.items()), body

    fake = FakeUpstream("crm", respond=look_alike)
    with LoopbackServer(fake) as server:
        yield fake, server


@pytest.fixture
async def gateway(
    vendor_api: tuple[FakeUpstream, LoopbackServer],
) -> AsyncIterator[tuple[httpx.AsyncClient, ConnectedAccounts, FakeClock]]:
    _, server = vendor_api
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    keyring = KeyRing.generate()
    accounts = ConnectedAccounts(
        DictStore(), keyring, {"crm": StubVendor(clock)}, clock=clock,
        connect_uri=lambda service: f"https://gw.example/connect/{service}",
    )  # fmt: skip
    swapper = CredentialSwapper(CredentialVault(store, keyring, clock=clock), connections=accounts)
    service = ServiceConfig(
        name="crm", base_url=server.url, credentials="connected", oauth=OAUTH,
        allow_insecure_http=True,
    )  # fmt: skip
    guard = Guard(store, clock=clock, services=[service], swapper=swapper)
    user = await make_user(store, user_id="alice", grants="crm:write")
    keys = await guard.issuer.issue(user.id, "ws-1")
    auth = AgentAuth(credentials_for(keys, None, "http://gw.test/oauth/token"), clock=clock)
    proxy = ProxyApp(guard, "crm")
    transport = httpx.ASGITransport(app=proxy)
    async with httpx.AsyncClient(transport=transport, base_url=GATEWAY, auth=auth) as c:
        yield c, accounts, clock
    await proxy.aclose()


@pytest.mark.anyio
async def test_agent_auth_raises_for_the_gateways_refusal(
    gateway: tuple[httpx.AsyncClient, ConnectedAccounts, FakeClock],
) -> None:
    client, _, _ = gateway
    with pytest.raises(AccountConnectionRequired) as raised:
        await client.get("/contacts")
    assert raised.value.service == "crm"
    assert raised.value.connect_uri == CONNECT


@pytest.mark.anyio
async def test_a_vendors_look_alike_refusal_is_not_raised(
    gateway: tuple[httpx.AsyncClient, ConnectedAccounts, FakeClock],
) -> None:
    client, accounts, clock = gateway
    await accounts.connect("crm", "alice", tokens_for(clock))
    response = await client.get("/contacts")  # the vendor answers 403 "connection_required"
    assert response.status_code == 403
    assert "agentguard-connection" not in response.headers
    assert response.json()["connect_uri"] == "https://evil.example/phish"
