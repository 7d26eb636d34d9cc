"""Security review of issue 21, FakeOAuthVendor (finding 13): a Google-like revocation mode
(revoking one token ends every grant of the user to the client), and control over the RFC 9207
``iss`` it redirects back with (none, or a wrong one), so the gateway's reconnect and mix-up
defences can be tested."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from agentguard._secret import Secret
from agentguard.connect import VendorRefused
from agentguard.connect._vendor import VendorClient
from agentguard.testing import FakeOAuthVendor
from tests.connect.vendor_support import (
    REDIRECT_URI,
    ConsentForm,
    Session,
    pkce,
    query_of,
    served_vendor,
)

pytestmark = pytest.mark.anyio

BASE = "http://vendor.test"


async def _session(**options: Any) -> AsyncIterator[Session]:
    vendor = FakeOAuthVendor(base_url=BASE, **options)
    transport = httpx.ASGITransport(app=vendor)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as http:
        yield Session(vendor, http)


@pytest.fixture
async def per_grant() -> AsyncIterator[Session]:
    async for session in _session():
        yield session


@pytest.fixture
async def per_client() -> AsyncIterator[Session]:
    async for session in _session(revocation="client"):
        yield session


async def _revoke(session: Session, token: str) -> httpx.Response:
    return await session.http.post("/revoke", data={"token": token}, headers=session.basic())


# -- revocation="client" ----------------------------------------------------------------------


@pytest.mark.parametrize("which", ["refresh_token", "access_token"])
async def test_client_revocation_ends_every_grant_of_the_user(
    per_client: Session, which: str
) -> None:
    old = await per_client.tokens("alice")
    new = await per_client.tokens("alice")  # a reconnect: a second grant
    bob = await per_client.tokens("bob")
    assert per_client.vendor.live_grants("alice") == 2
    answer = await _revoke(per_client, old[which])
    assert answer.status_code == 200 and per_client.vendor.revoked == 1
    assert per_client.vendor.live_grants("alice") == 0
    for tokens in (old, new):
        assert (await per_client.api(tokens["access_token"])).status_code == 401
        refused = await per_client.refresh(tokens["refresh_token"])
        assert refused.json()["error"] == "invalid_grant"
    assert (await per_client.api(bob["access_token"])).status_code == 200
    assert per_client.vendor.live_grants("bob") == 1


async def test_grant_revocation_leaves_the_users_other_grant(per_grant: Session) -> None:
    old = await per_grant.tokens("alice")
    new = await per_grant.tokens("alice")
    await _revoke(per_grant, old["refresh_token"])
    assert per_grant.vendor.live_grants("alice") == 1
    assert (await per_grant.api(new["access_token"])).status_code == 200
    assert (await per_grant.refresh(new["refresh_token"])).status_code == 200


async def test_client_revocation_of_a_dead_token_revokes_nothing_live_but_still_ends_grants(
    per_client: Session,
) -> None:
    old = await per_client.tokens("alice")
    rotated = await per_client.refresh(old["refresh_token"])
    assert rotated.status_code == 200
    new = await per_client.tokens("alice")
    await _revoke(per_client, old["access_token"])  # killed by nothing yet: still live
    assert per_client.vendor.revoked == 1
    assert (await per_client.api(new["access_token"])).status_code == 401
    again = await _revoke(per_client, old["access_token"])
    assert again.status_code == 200 and per_client.vendor.revoked == 1
    assert not per_client.vendor.is_active(new["refresh_token"])


async def test_client_revocation_needs_the_owning_client(per_client: Session) -> None:
    tokens = await per_client.tokens("alice")
    stranger = await per_client.http.post(
        "/revoke", data={"token": tokens["refresh_token"]}, headers=per_client.basic("wrong")
    )
    assert stranger.status_code == 401
    assert per_client.vendor.live_grants("alice") == 1


def test_an_unknown_revocation_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="revocation"):
        FakeOAuthVendor(revocation="user")  # type: ignore[arg-type]


async def test_a_connection_revoked_over_sockets_takes_the_reconnects_grant() -> None:
    with served_vendor(revocation="client", auto_approve="alice") as fake:
        client = VendorClient("crm", fake.oauth_config(), client_secret=fake.client_secret)
        try:
            grants = []
            for _ in range(2):
                verifier, challenge = pkce()
                url = await client.authorization_url(
                    redirect_uri=REDIRECT_URI, state="st", code_challenge=challenge
                )
                async with httpx.AsyncClient() as browser:
                    back = query_of((await browser.get(url)).headers["location"])
                grants.append(
                    await client.exchange_code(
                        back["code"], redirect_uri=REDIRECT_URI, code_verifier=verifier
                    )
                )
            assert fake.live_grants("alice") == 2
            first = grants[0].refresh_token
            assert first is not None
            assert await client.revoke(first) is True
            assert fake.live_grants("alice") == 0
            assert not fake.is_active(grants[1].access_token)
        finally:
            await client.aclose()


# -- the iss of the redirect back (RFC 9207) ---------------------------------------------------


async def _back(session: Session, decision: str = "allow", **changes: str | None) -> dict[str, str]:
    page = await session.http.get("/authorize", params=session.authorize_params(**changes))
    assert page.status_code == 200, page.text
    form = ConsentForm(page.text)
    answer = await session.http.post(
        form.action, data={**form.hidden, "login": "alice", "decision": decision}
    )
    assert answer.status_code == 302, answer.text
    return query_of(answer.headers["location"])


async def _metadata(session: Session) -> dict[str, Any]:
    answer = await session.http.get("/.well-known/oauth-authorization-server")
    document: dict[str, Any] = answer.json()
    return document


async def test_iss_is_sent_and_promised_by_default(per_grant: Session) -> None:
    for decision in ("allow", "deny"):
        assert (await _back(per_grant, decision))["iss"] == BASE
    assert (await _metadata(per_grant))["authorization_response_iss_parameter_supported"] is True


async def test_without_iss_nothing_is_sent_or_promised() -> None:
    async for session in _session(issuer_in_redirect=False):
        for decision in ("allow", "deny"):
            back = await _back(session, decision)
            assert "iss" not in back and back["state"]
        refused = await session.http.get(
            "/authorize", params=session.authorize_params(response_type="token")
        )
        assert "iss" not in query_of(refused.headers["location"])
        document = await _metadata(session)
        assert document["authorization_response_iss_parameter_supported"] is False


async def test_a_wrong_iss_can_be_sent_and_changed_at_any_time(per_grant: Session) -> None:
    per_grant.vendor.redirect_iss = "https://evil.example"
    back = await _back(per_grant)
    assert back["iss"] == "https://evil.example" and back["code"]
    refused = await per_grant.http.get(
        "/authorize", params=per_grant.authorize_params(scope="unknown.scope")
    )
    assert query_of(refused.headers["location"])["iss"] == "https://evil.example"
    per_grant.vendor.redirect_iss = None
    assert (await _back(per_grant))["iss"] == BASE


async def test_a_wrong_iss_is_caught_by_the_vendor_client() -> None:
    with served_vendor(redirect_iss="https://evil.example", auto_approve="alice") as fake:
        client = VendorClient(
            "crm", fake.oauth_config(discovery=True), client_secret=fake.client_secret
        )
        try:
            _, challenge = pkce()
            url = await client.authorization_url(
                redirect_uri=REDIRECT_URI, state="st", code_challenge=challenge
            )
            async with httpx.AsyncClient() as browser:
                back = query_of((await browser.get(url)).headers["location"])
            with pytest.raises(VendorRefused, match="another issuer"):
                await client.check_issuer(back["iss"])
            fake.redirect_iss = None
            async with httpx.AsyncClient() as browser:
                back = query_of((await browser.get(url)).headers["location"])
            await client.check_issuer(back["iss"])
        finally:
            await client.aclose()


def test_the_new_options_show_no_secret() -> None:
    vendor = FakeOAuthVendor(client_secret="cs-still-nowhere-6789", revocation="client")
    assert "cs-still-nowhere-6789" not in repr(vendor)
    assert vendor.client_secret == Secret("cs-still-nowhere-6789")
