"""Every way a named approval can fail, answered 403 with the right reason and audited.

Expired, denied, used, pending, unknown, malformed, doubled, another user's: each is refused
with an RFC 6749-shaped JSON body that names no key and quotes no body, never a 500, and each
decision is in the audit log with the approval id and without the body.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import anyio
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock
from tests.gates.support import (
    APPROVAL,
    APPROVAL_TTL,
    World,
    approve,
    audit_events,
    build_world,
    held_and_approved,
    hold,
    refusal,
)

pytestmark = pytest.mark.anyio

MARKER = b"body-marker-7f3a"  # never in a refusal or an audit event
BODY = b'{"delete": "everything", "m": "' + MARKER + b'"}'
URL = "/crm/records/9"
ALLOWED_MEMBERS = {"error", "error_description", "reason", "approval_id", "expires_at"}


def _shaped(response: httpx.Response, world: World) -> dict[str, Any]:
    """The refusal body: RFC 6749 §5.2 members plus ours, no key, no body."""
    document: dict[str, Any] = response.json()
    assert set(document) <= ALLOWED_MEMBERS, document
    assert all(isinstance(value, str) for value in document.values())
    text = response.text
    for party in (world.alice, world.alice2, world.bob):
        assert party.key not in text
    assert MARKER.decode() not in text
    assert response.headers["cache-control"] == "no-store"
    return document


async def _delete(world: World, headers: dict[str, str] | list[tuple[str, str]]) -> httpx.Response:
    async with world.client() as client:
        return await client.request("DELETE", URL, headers=headers, content=BODY)


async def _approved(world: World) -> str:
    async with world.client() as client:
        return await held_and_approved(world, client, "DELETE", URL, BODY)


async def test_the_same_held_call_gets_the_same_approval_until_decided(world: World) -> None:
    async with world.client() as client:
        first = await hold(client, world.alice, "DELETE", URL, BODY)
        again = await client.request("DELETE", URL, headers=world.alice.auth(), content=BODY)
    document = refusal(again, 403, "approval_required", "approval_pending")
    assert document["approval_id"] == first
    named = await _delete(world, world.alice.auth(first))
    document = refusal(named, 403, "approval_required", "approval_pending")
    assert document["approval_id"] == first and _shaped(named, world)
    assert world.recorder.calls == []


@pytest.mark.parametrize("seconds", [300, 301])
async def test_an_approval_expires_at_its_ttl(world: World, clock: FakeClock, seconds: int) -> None:
    approval_id = await _approved(world)
    clock.advance(timedelta(seconds=seconds))
    response = await _delete(world, world.alice.auth(approval_id))
    document = refusal(response, 403, "approval_invalid", "approval_expired")
    assert document["approval_id"] == approval_id and _shaped(response, world)
    async with world.client() as client:  # the call again, unnamed: a new approval
        assert await hold(client, world.alice, "DELETE", URL, BODY) != approval_id
    assert world.recorder.calls == []


async def test_an_undecided_approval_expires_too(world: World, clock: FakeClock) -> None:
    async with world.client() as client:
        approval_id = await hold(client, world.alice, "DELETE", URL, BODY)
    clock.advance(APPROVAL_TTL)
    refusal(await _delete(world, world.alice.auth(approval_id)), 403, "approval_invalid",
            "approval_expired")  # fmt: skip


async def test_a_denied_approval_is_refused(world: World) -> None:
    async with world.client() as client:
        approval_id = await hold(client, world.alice, "DELETE", URL, BODY)
    await approve(world.guard, approval_id, yes=False)
    response = await _delete(world, world.alice.auth(approval_id))
    refusal(response, 403, "approval_invalid", "approval_denied")
    _shaped(response, world)
    assert world.recorder.calls == []


async def test_an_approval_runs_one_call(world: World) -> None:
    approval_id = await _approved(world)
    assert (await _delete(world, world.alice.auth(approval_id))).status_code == 200
    response = await _delete(world, world.alice.auth(approval_id))
    refusal(response, 403, "approval_invalid", "approval_used")
    assert len(world.recorder.calls) == 1


UNKNOWN = {
    "well-formed, unknown": "apr_" + "A" * 22,
    "malformed": "apr_short",
    "not an id": "please",
    "padded": "apr_" + "A" * 22 + "x",
    "sql": "apr_' OR 1=1 --",
}


@pytest.mark.parametrize("name", list(UNKNOWN))
async def test_an_unknown_or_malformed_id_is_unknown(world: World, name: str) -> None:
    response = await _delete(world, world.alice.auth(UNKNOWN[name]))
    document = refusal(response, 403, "approval_invalid", "unknown_approval")
    assert "approval_id" not in document and _shaped(response, world)


async def test_two_approval_headers_are_refused(world: World) -> None:
    approval_id = await _approved(world)
    headers = [("Authorization", f"Bearer {world.alice.key}"), (APPROVAL, approval_id),
               (APPROVAL, approval_id)]  # fmt: skip
    refusal(await _delete(world, headers), 403, "approval_invalid", "unknown_approval")
    assert world.recorder.calls == []
    assert (await _delete(world, world.alice.auth(approval_id))).status_code == 200


async def test_another_users_approval_is_unknown_to_this_user(world: World) -> None:
    async with world.client() as client:
        bobs = await held_and_approved(world, client, "DELETE", URL, BODY, party=world.bob)
    response = await _delete(world, world.alice.auth(bobs))
    document = refusal(response, 403, "approval_invalid", "unknown_approval")
    assert "approval_id" not in document
    assert (await _delete(world, world.bob.auth(bobs))).status_code == 200


@settings(max_examples=60, deadline=None)
@given(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80))
def test_any_approval_header_value_is_a_403_never_a_500(value: str) -> None:
    async def scenario() -> None:
        clock = FakeClock()
        world = await build_world(MemoryStore(clock=clock), clock)
        response = await _delete(world, world.alice.auth(value))
        assert response.status_code == 403, response.text
        assert response.json()["error"] in ("approval_invalid", "approval_required")
        assert world.recorder.calls == []

    anyio.run(scenario)


async def test_audit_events_name_the_approval_and_never_the_body(world: World) -> None:
    async with world.client() as client:
        denied = await hold(client, world.alice, "DELETE", "/crm/records/1", BODY)
    await approve(world.guard, denied, yes=False)
    async with world.client() as client:
        await client.request(
            "DELETE", "/crm/records/1", headers=world.alice.auth(denied), content=BODY
        )
    approval_id = await _approved(world)
    await _delete(world, world.alice2.auth(approval_id))  # mismatch
    await _delete(world, world.alice.auth(approval_id))  # consumed
    await _delete(world, world.alice.auth(approval_id))  # used
    await world.guard.audit.flush()
    events = await audit_events(world.store)
    text = json.dumps(events)
    assert MARKER.decode() not in text and "everything" not in text
    by_action: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_action.setdefault(event["action"], []).append(event)
    assert {e["detail"]["approval_id"] for e in by_action["approval.request"]} == {
        denied, approval_id,
    }  # fmt: skip
    [consumed] = by_action["approval.consume"]
    assert consumed["detail"] == {"approval_id": approval_id}
    assert consumed["decision"] == "allow", consumed
    assert consumed["actor"]["family"] == world.alice.family_id, consumed
    refused = {
        event["reason"]: event["detail"].get("approval_id")
        for event in by_action["guard.decision"]
        if (event["reason"] or "").startswith("approval_")
    }
    assert refused == {
        "approval_denied": denied,
        "approval_mismatch": approval_id,
        "approval_used": approval_id,
    }
    decisions = list(by_action["approval.decide"])
    assert {e["detail"]["approval_id"] for e in decisions} == {denied, approval_id}
    assert all("body_preview" not in e["detail"] for e in events if e.get("detail"))
