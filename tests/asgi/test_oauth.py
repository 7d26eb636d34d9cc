"""The token (RFC 6749 §6), revocation (RFC 7009) and introspection (RFC 7662) endpoints."""

from __future__ import annotations

import pytest

from agentguard import AccountStatus, Grants
from agentguard.asgi import OAuthApp
from tests.asgi.conftest import INTROSPECTION_SECRET, Setup

pytestmark = pytest.mark.anyio


async def token(setup: Setup, **form: str) -> tuple[int, dict[str, object], dict[str, str]]:
    response = await setup.client.post("/oauth/token", data=form)
    return response.status_code, response.json(), dict(response.headers)


async def test_refresh_grant_returns_rfc6749_body(setup: Setup) -> None:
    status, body, headers = await token(
        setup, grant_type="refresh_token", refresh_token=setup.keys.refresh_key.reveal()
    )
    assert status == 200
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert headers["cache-control"] == "no-store"
    assert headers["pragma"] == "no-cache"
    new_access = str(body["access_token"])
    response = await setup.client.get("/crm/contacts", headers=setup.auth(new_access))
    assert response.status_code == 200


async def test_rotation_and_reuse_over_http(setup: Setup) -> None:
    old_refresh = setup.keys.refresh_key.reveal()
    status, body, _ = await token(setup, grant_type="refresh_token", refresh_token=old_refresh)
    assert status == 200
    status, reuse, headers = await token(
        setup, grant_type="refresh_token", refresh_token=old_refresh
    )
    assert status == 400
    assert reuse["error"] == "invalid_grant"
    assert reuse["reason"] == "refresh_reused"
    assert "www-authenticate" not in headers
    response = await setup.client.get(
        "/crm/contacts", headers=setup.auth(str(body["access_token"]))
    )
    assert response.status_code == 401
    assert response.json()["reason"] == "revoked"


async def test_refresh_fails_for_disabled_user(setup: Setup) -> None:
    await setup.store.put_user(setup.user.model_copy(update={"enabled": False}))
    status, body, _ = await token(
        setup, grant_type="refresh_token", refresh_token=setup.keys.refresh_key.reveal()
    )
    assert (status, body["error"], body["reason"]) == (400, "invalid_grant", "user_disabled")


async def test_scope_parameter_narrows(setup: Setup) -> None:
    both = Grants.from_scope("crm:read projects:read")
    await setup.store.put_user(setup.user.model_copy(update={"grants": both}))
    status, body, _ = await token(
        setup,
        grant_type="refresh_token",
        refresh_token=setup.keys.refresh_key.reveal(),
        scope="projects:read",
    )
    assert status == 200
    assert body["scope"] == "projects:read"
    response = await setup.client.get(
        "/crm/contacts", headers=setup.auth(str(body["access_token"]))
    )
    assert response.status_code == 403
    response = await setup.client.get(
        "/projects/list", headers=setup.auth(str(body["access_token"]))
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("form", "status", "error"),
    [
        ({}, 400, "invalid_request"),
        ({"grant_type": "password", "username": "u"}, 400, "unsupported_grant_type"),
        ({"grant_type": "refresh_token"}, 400, "invalid_request"),
        ({"grant_type": "refresh_token", "refresh_token": "nope"}, 400, "invalid_grant"),
        (
            {"grant_type": "refresh_token", "refresh_token": "x", "scope": "bad scope!"},
            400,
            "invalid_scope",
        ),
    ],
)
async def test_token_errors(setup: Setup, form: dict[str, str], status: int, error: str) -> None:
    got_status, body, headers = await token(setup, **form)
    assert (got_status, body["error"]) == (status, error)
    assert headers["cache-control"] == "no-store"


async def test_token_needs_post_and_form(setup: Setup) -> None:
    response = await setup.client.get("/oauth/token")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    response = await setup.client.post("/oauth/token", json={"grant_type": "refresh_token"})
    assert response.status_code == 400
    assert "x-www-form-urlencoded" in response.json()["error_description"]


async def test_repeated_parameter_is_refused(setup: Setup) -> None:
    response = await setup.client.post(
        "/oauth/token",
        content=b"grant_type=refresh_token&grant_type=refresh_token",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 400
    assert "more than once" in response.json()["error_description"]


@pytest.mark.parametrize("body", [b"\xff\xfe=1", b"a=%ZZ&&&", b"=" * 3])
async def test_bad_form_bodies_are_400(setup: Setup, body: bytes) -> None:
    response = await setup.client.post(
        "/oauth/token", content=body, headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code == 400


async def test_oversized_body_is_413(setup: Setup) -> None:
    response = await setup.client.post("/oauth/token", data={"grant_type": "x" * 10_000})
    assert response.status_code == 413


async def test_unknown_endpoint_is_404(setup: Setup) -> None:
    assert (await setup.client.post("/oauth/authorize")).status_code == 404


async def test_revoke_refresh_key_kills_family(setup: Setup) -> None:
    response = await setup.client.post(
        "/oauth/revoke", data={"token": setup.keys.refresh_key.reveal()}
    )
    assert response.status_code == 200
    assert response.content == b""
    assert (await setup.client.get("/crm/contacts", headers=setup.auth())).status_code == 401
    status, body, _ = await token(
        setup, grant_type="refresh_token", refresh_token=setup.keys.refresh_key.reveal()
    )
    assert (status, body["reason"]) == (400, "revoked")


async def test_revoke_unknown_token_is_still_200(setup: Setup) -> None:
    for value in ("garbage", "ag_at_" + "A" * 49):
        response = await setup.client.post("/oauth/revoke", data={"token": value})
        assert response.status_code == 200
    assert (await setup.client.post("/oauth/revoke", data={})).status_code == 400


async def introspect(
    setup: Setup, value: str, secret: str = INTROSPECTION_SECRET
) -> tuple[int, dict[str, object]]:
    response = await setup.client.post(
        "/oauth/introspect", data={"token": value}, headers={"Authorization": f"Bearer {secret}"}
    )
    return response.status_code, response.json()


async def test_introspect_active_access_key(setup: Setup) -> None:
    status, body = await introspect(setup, setup.keys.access_key.reveal())
    assert status == 200
    assert body["active"] is True
    assert body["token_type"] == "access_token"
    assert body["sub"] == "user-1"
    assert body["scope"] == "crm:read"
    assert body["jti"] == setup.keys.access.id


async def test_introspect_inactive_after_account_closed(setup: Setup) -> None:
    account = await setup.store.get_account("acct-1")
    assert account is not None
    await setup.store.put_account(account.model_copy(update={"status": AccountStatus.CLOSED}))
    for value in (setup.keys.access_key.reveal(), setup.keys.refresh_key.reveal(), "junk"):
        status, body = await introspect(setup, value)
        assert (status, body) == (200, {"active": False})


async def test_introspect_requires_client_secret(setup: Setup) -> None:
    response = await setup.client.post(
        "/oauth/introspect", data={"token": setup.keys.access_key.reveal()}
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert "www-authenticate" in response.headers
    status, body = await introspect(setup, setup.keys.access_key.reveal(), secret="w" * 40)
    assert (status, body["error"]) == (401, "invalid_client")


async def test_introspection_disabled_without_secret(setup: Setup) -> None:
    import httpx

    app = OAuthApp(setup.guard)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        response = await client.post(
            "/introspect", data={"token": "x"}, headers={"Authorization": "Bearer " + "a" * 40}
        )
    assert response.status_code == 401
    assert "disabled" in response.json()["error_description"]


def test_weak_introspection_secret_is_refused() -> None:
    from agentguard import Guard
    from agentguard.storage import MemoryStore

    with pytest.raises(ValueError, match="32"):
        OAuthApp(Guard(MemoryStore()), introspection_secrets=["short"])
