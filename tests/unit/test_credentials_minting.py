from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from agentguard import Grants, Principal, Secret, ServiceConfig
from agentguard.credentials import (
    CallableMinter,
    MintCache,
    MintedToken,
    MintingError,
    TokenExchangeMinter,
)
from agentguard.testing import FakeClock

pytestmark = pytest.mark.anyio
SERVICE = ServiceConfig(name="projects", base_url="https://projects.example")
ADMIN = Secret("admin-key-000111222333444555")


def principal(scope: str = "projects:read", workspace: str = "w1") -> Principal:
    return Principal(
        user_id="u1",
        workspace_id=workspace,
        account_id="a1",
        key_id="key_1",
        family_id="fam_1",
        grants=Grants.from_scope(scope),
        expires_at=datetime(2030, 1, 1, tzinfo=timezone.utc),
    )


def minter_with(
    handler: httpx.MockTransport,
    clock: FakeClock,
    *,
    audience: str | None = None,
    scope: str | None = None,
    client_id: str | None = None,
) -> TokenExchangeMinter:
    client = httpx.AsyncClient(transport=handler)
    return TokenExchangeMinter(
        "https://vendor.example/token",
        client=client,
        clock=clock,
        audience=audience,
        scope=scope,
        client_id=client_id,
    )


async def test_token_exchange_request_and_answer(clock: FakeClock) -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200, json={"access_token": "minted-1", "expires_in": 600, "token_type": "Bearer"}
        )

    minter = minter_with(httpx.MockTransport(handle), clock, audience="projects-api", scope="read")
    minted = await minter.mint(ADMIN, principal(), SERVICE)
    assert minted.token.reveal() == "minted-1"
    assert minted.expires_at == clock.now() + timedelta(seconds=600)
    form = dict(httpx.QueryParams(seen[0].content.decode()))
    assert form == {
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
        "subject_token": "u1",
        "subject_token_type": "urn:agentguard:params:oauth:token-type:user-id",
        "requested_token_type": "urn:ietf:params:oauth:token-type:access_token",
        "audience": "projects-api",
        "scope": "read",
    }
    assert seen[0].headers["authorization"] == f"Bearer {ADMIN.reveal()}"


async def test_client_secret_basic(clock: FakeClock) -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"access_token": "t", "expires_in": 60})

    await minter_with(httpx.MockTransport(handle), clock, client_id="gateway").mint(
        ADMIN, principal(), SERVICE
    )
    assert seen[0].headers["authorization"].startswith("Basic ")


@pytest.mark.parametrize(
    ("status", "body", "fragment"),
    [
        (400, {"error": "invalid_grant"}, "400 (invalid_grant)"),
        (401, {"error": f"bad key {ADMIN.reveal()}"}, "401 (no error code)"),
        (401, {"error": ADMIN.reveal()}, "401 (no error code)"),
        (500, None, "500 (no error code)"),
        (200, {"access_token": "", "expires_in": 5}, "no access_token"),
        (200, {"access_token": "t", "expires_in": "5"}, "no usable expires_in"),
        (200, {"access_token": "t", "expires_in": True}, "no usable expires_in"),
    ],
)
async def test_failures_are_named_without_secrets(
    clock: FakeClock, status: int, body: object, fragment: str
) -> None:
    content = json.dumps(body).encode() if body is not None else b"<html>oops</html>"
    minter = minter_with(
        httpx.MockTransport(lambda _: httpx.Response(status, content=content)), clock
    )
    with pytest.raises(MintingError) as info:
        await minter.mint(ADMIN, principal(), SERVICE)
    assert fragment in str(info.value)
    assert ADMIN.reveal() not in str(info.value)


async def test_network_failure(clock: FakeClock) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    with pytest.raises(MintingError, match="ConnectError"):
        await minter_with(httpx.MockTransport(handle), clock).mint(ADMIN, principal(), SERVICE)


def test_token_endpoint_must_be_https() -> None:
    with pytest.raises(ValueError, match="https"):
        TokenExchangeMinter("http://vendor.example/token")


async def test_callable_minter(clock: FakeClock) -> None:
    async def mint(admin: Secret, who: Principal, service: ServiceConfig) -> tuple[str, datetime]:
        return f"t-{who.user_id}", clock.now() + timedelta(minutes=5)

    minted = await CallableMinter(mint).mint(ADMIN, principal(), SERVICE)
    assert minted.token.reveal() == "t-u1"


def test_cache_lifetime_state_and_invalidation(clock: FakeClock) -> None:
    cache = MintCache(clock, fraction=0.5)
    token = MintedToken(Secret("t"), clock.now() + timedelta(seconds=100))
    cache.put("projects", principal(), token)
    assert cache.get("projects", principal()) == token
    assert cache.get("projects", principal("projects:write")) is None  # grants changed: dropped
    assert cache.get("projects", principal()) is None  # and gone for good
    cache.put("projects", principal(), token)
    clock.advance(49)
    assert cache.get("projects", principal()) == token
    clock.advance(2)
    assert cache.get("projects", principal()) is None
    cache.put(
        "projects", principal(), MintedToken(Secret("t2"), clock.now() + timedelta(seconds=100))
    )
    assert cache.invalidate_user("u1") == 1
    assert len(cache) == 0
    cache.put("projects", principal(), MintedToken(Secret("old"), clock.now()))
    assert len(cache) == 0  # already expired: not kept
    with pytest.raises(ValueError):
        MintCache(clock, fraction=0)
