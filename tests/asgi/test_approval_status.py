"""``GET /oauth/approvals/{id}``: an agent reads its own approval's state with its own key."""

from __future__ import annotations

from datetime import timedelta

import pytest

from agentguard import Guard
from agentguard._model import ApprovalRecord
from agentguard.testing import make_user
from tests.asgi.conftest import Setup

pytestmark = pytest.mark.anyio

APPROVAL_ID = "apr_k3Jd9xQ2mP0vL7sT4wZ8bN"
# Ids in URLs are mixed: the HTTP client logs request lines, and a run of one letter there may
# equal some test's secret (the secrets canary would report a leak).
_MIXED = "k3Jd9xQ2mP0vL7sT4wZ8bN"


def approval(
    setup: Setup, approval_id: str = APPROVAL_ID, user_id: str = "user-1", ttl: float = 3600
) -> ApprovalRecord:
    now = setup.clock.now()
    return ApprovalRecord(
        id=approval_id,
        binding="0" * 64,
        family_id="fam-1",
        key_id="key-1",
        user_id=user_id,
        workspace_id="ws-1",
        account_id="acct-1",
        service="crm",
        scope="crm:write",
        method="POST",
        path="/crm/contacts",
        query="secret=1",
        body_digest="sha-256:" + "0" * 64,
        body_bytes=12,
        body_preview='{"name":"x"}',
        rule_version="0" * 16,
        created_at=now,
        expires_at=now + timedelta(seconds=ttl),
    )


def ids(event: dict[str, object]) -> dict[str, object]:
    actor = event["actor"]
    assert isinstance(actor, dict)
    return {name: actor[name] for name in ("family", "key_id")}


async def stored(setup: Setup, record: ApprovalRecord) -> ApprovalRecord:
    return await setup.store.create_approval(record, now=setup.clock.now())


async def test_own_approval_shows_state_and_times_only(setup: Setup) -> None:
    await stored(setup, approval(setup))
    response = await setup.client.get(f"/oauth/approvals/{APPROVAL_ID}", headers=setup.auth())
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert response.json() == {
        "approval_id": APPROVAL_ID,
        "state": "pending",
        "expires_at": "2026-01-01T01:00:00Z",
        "decided_at": None,
    }


async def test_state_follows_the_decision_and_the_expiry(setup: Setup) -> None:
    await stored(setup, approval(setup, ttl=600))
    setup.clock.advance(60)
    decided = await setup.store.decide_approval(
        APPROVAL_ID, approve=True, by="op-1", now=setup.clock.now()
    )
    assert decided is not None
    url = f"/oauth/approvals/{APPROVAL_ID}/"  # a trailing slash reads the same approval
    body = (await setup.client.get(url, headers=setup.auth())).json()
    assert (body["state"], body["decided_at"]) == ("approved", "2026-01-01T00:01:00Z")
    setup.clock.advance(540)
    body = (await setup.client.get(url, headers=setup.auth())).json()
    assert body["state"] == "expired"


async def test_another_users_approval_looks_unknown(setup: Setup) -> None:
    await make_user(setup.store, user_id="user-2", grants="crm:write")
    await stored(setup, approval(setup, user_id="user-2"))
    theirs = await setup.client.get(f"/oauth/approvals/{APPROVAL_ID}", headers=setup.auth())
    unknown = await setup.client.get(
        "/oauth/approvals/apr_Bx4Km9Qw2Lp7Zs1Tn6Vd3R", headers=setup.auth()
    )
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.content == unknown.content  # nothing tells the two apart
    assert theirs.json()["reason"] == "unknown_approval"
    assert theirs.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    "path", ["apr_short!", "apr_" + _MIXED * 5, "nope", "APR_" + _MIXED[:22], "apr_" + _MIXED * 4]
)
async def test_malformed_ids_are_unknown(setup: Setup, path: str) -> None:
    response = await setup.client.get(f"/oauth/approvals/{path}", headers=setup.auth())
    assert response.status_code == 404
    assert response.json()["reason"] == "unknown_approval"


@pytest.mark.parametrize("path", ["%2e%2e", "apr_x%2F..%2Ftoken"])
async def test_an_ambiguous_target_is_refused_before_any_lookup(setup: Setup, path: str) -> None:
    response = await setup.client.get(f"/oauth/approvals/{path}", headers=setup.auth())
    assert response.status_code == 400


async def test_without_a_key_is_401_with_a_challenge(setup: Setup) -> None:
    await stored(setup, approval(setup))
    response = await setup.client.get(f"/oauth/approvals/{APPROVAL_ID}")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "approval_id" not in response.json()


async def test_a_disabled_users_key_is_refused(setup: Setup) -> None:
    await stored(setup, approval(setup))
    await setup.store.put_user(setup.user.model_copy(update={"enabled": False}))
    response = await setup.client.get(f"/oauth/approvals/{APPROVAL_ID}", headers=setup.auth())
    assert response.status_code == 401


async def test_only_get(setup: Setup) -> None:
    response = await setup.client.post(f"/oauth/approvals/{APPROVAL_ID}", headers=setup.auth())
    assert response.status_code == 405
    assert response.headers["allow"] == "GET"


async def test_every_poll_is_audited(setup: Setup) -> None:
    await stored(setup, approval(setup))
    await setup.client.get(f"/oauth/approvals/{APPROVAL_ID}", headers=setup.auth())
    path = f"/oauth/approvals/{APPROVAL_ID}"
    events = [e for e in await setup.events() if e.get("path") == path]
    assert [(e["decision"], e["actor"]) for e in events] == [
        ("allow", {"account": "acct-1", "user": "user-1", "workspace": "ws-1"} | ids(events[0]))
    ]


async def test_without_approvals_the_endpoint_says_so(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Guard, "approval_store", property(lambda self: None))
    response = await setup.client.get(f"/oauth/approvals/{APPROVAL_ID}", headers=setup.auth())
    assert response.status_code == 404
    assert "not enabled" in response.json()["error_description"]


async def test_a_store_outage_is_503_never_500(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(approval_id: str) -> ApprovalRecord | None:
        raise OSError("connection reset")

    monkeypatch.setattr(setup.store, "get_approval", broken)
    response = await setup.client.get(f"/oauth/approvals/{APPROVAL_ID}", headers=setup.auth())
    assert response.status_code == 503
    assert "retry-after" in response.headers
    outage = [e for e in await setup.events() if e.get("reason") == "store_unavailable"]
    assert len(outage) == 1
