"""An approval lets exactly the approved call run: every bound field changed is refused.

The oracle is differential: what the app behind the guard receives is compared with what the
operator approved (the body's digest in the approval record), and a refused variant must leave
the approval usable by the unchanged call, exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentguard import Level, Requirement
from agentguard._request import GuardRequest
from agentguard.approvals import ApprovalInvalid
from agentguard.approvals._binding import binding
from agentguard.approvals._step import Call
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock
from tests.gates.support import (
    Party,
    World,
    build_world,
    crm_rules,
    held_and_approved,
    refusal,
)

pytestmark = pytest.mark.anyio

BODY = b'{"contact": 42, "note": "approved by a human"}'
URL = "/crm/contacts/42?notify=yes"


@dataclass(frozen=True)
class Variant:
    """The retry: who sends it, and the call it makes."""

    party: str = "alice"
    method: str = "POST"
    url: str = URL
    body: bytes = BODY


VARIANTS: dict[str, tuple[Variant, str]] = {
    "key family": (Variant(party="alice2"), "approval_mismatch"),
    "user": (Variant(party="bob"), "unknown_approval"),
    "method": (Variant(method="PUT"), "approval_mismatch"),
    "path": (Variant(url="/crm/contacts/43?notify=yes"), "approval_mismatch"),
    "path trailing slash": (Variant(url="/crm/contacts/42/?notify=yes"), "approval_mismatch"),
    "query value": (Variant(url="/crm/contacts/42?notify=no"), "approval_mismatch"),
    "query added": (Variant(url=URL + "&cascade=1"), "approval_mismatch"),
    "query dropped": (Variant(url="/crm/contacts/42"), "approval_mismatch"),
    "body one byte": (Variant(body=BODY.replace(b"42", b"43")), "approval_mismatch"),
    "body appended": (Variant(body=BODY + b" "), "approval_mismatch"),
    "body empty": (Variant(body=b""), "approval_mismatch"),
}


def _party(world: World, name: str) -> Party:
    parties: dict[str, Party] = {
        "alice": world.alice, "alice2": world.alice2, "bob": world.bob,
    }  # fmt: skip
    return parties[name]


async def _send(world: World, variant: Variant, approval_id: str) -> tuple[int, dict[str, str]]:
    async with world.client() as client:
        response = await client.request(
            variant.method,
            variant.url,
            headers=_party(world, variant.party).auth(approval_id),
            content=variant.body,
        )
    return response.status_code, response.json()


async def _approved(world: World) -> str:
    async with world.client() as client:
        return await held_and_approved(world, client, "POST", URL, BODY)


async def _ran_once_as_approved(world: World, approval_id: str) -> None:
    """The unchanged retry runs, with exactly the approved call, and only once."""
    status, _ = await _send(world, Variant(), approval_id)
    assert status == 200
    record = await world.store.get_approval(approval_id)
    [call] = world.recorder.calls
    assert (call.method, call.path, call.query) == ("POST", "/crm/contacts/42", "notify=yes")
    assert call.digest == record.body_digest and call.body == BODY
    status, document = await _send(world, Variant(), approval_id)
    assert (status, document["reason"]) == (403, "approval_used")
    assert len(world.recorder.calls) == 1


@pytest.mark.parametrize("field", list(VARIANTS))
async def test_a_changed_field_is_refused_and_the_approval_stays_usable(
    world: World, field: str
) -> None:
    variant, reason = VARIANTS[field]
    approval_id = await _approved(world)
    status, document = await _send(world, variant, approval_id)
    assert (status, document["error"], document["reason"]) == (403, "approval_invalid", reason)
    assert "approved by a human" not in str(document)
    assert world.recorder.calls == []
    await _ran_once_as_approved(world, approval_id)


async def test_an_edited_rule_voids_the_approval_given_under_the_old_one(world: World) -> None:
    approval_id = await _approved(world)
    edited = world.rebuilt(crm_rules(cost=2))  # same prefix, same approval, another cost
    async with world.client(world.guarded(edited)) as client:
        response = await client.post(URL, headers=world.alice.auth(approval_id), content=BODY)
    refusal(response, 403, "approval_invalid", "approval_mismatch")
    assert world.recorder.calls == []
    await _ran_once_as_approved(world, approval_id)  # the old rule's instance still honours it


async def test_a_query_field_carrying_a_key_shape_is_still_bound(world: World) -> None:
    approval_id = await _approved(world)
    smuggled = URL + "&notify=everyone" + "ag_at_" + "Ab3" * 16 + "A"
    status, document = await _send(world, Variant(url=smuggled), approval_id)
    assert (status, document.get("reason")) == (403, "approval_mismatch"), world.recorder.calls


def test_the_binding_covers_the_service_alone() -> None:
    """Service and rule version can only change together through rules; the binding still
    separates two requirements that differ in the service alone."""
    fields = {
        "family_id": "fam", "user_id": "u", "method": "POST", "target": b"/x",
        "digest": "sha-256:" + "0" * 64, "rule_version": "1" * 32,
    }  # fmt: skip
    assert binding(service="crm", **fields) != binding(service="erp", **fields)  # type: ignore[arg-type]
    assert binding(service="crm", **fields) != binding(service=None, **fields)  # type: ignore[arg-type]


async def test_a_requirement_for_another_service_is_refused_by_the_step(world: World) -> None:
    """The step itself, given a requirement naming another service on the same rule."""
    approval_id = await _approved(world)
    step = world.guard._gates.approvals
    assert step is not None
    principal = await world.guard.resolve(world.alice.key)
    request = GuardRequest(
        method="POST",
        path="/crm/contacts/42",
        raw_path=b"/crm/contacts/42",
        query_string=b"notify=yes",
        headers=[(b"host", b"gw.test"), (b"agentguard-approval", approval_id.encode())],
    )
    rule = world.guard.permissions.requirement("POST", "/crm/contacts/42")
    assert rule is not None and rule.approval
    other = Requirement("erp", Level.WRITE, approval=True, cost=rule.cost, rule=rule.rule)
    with pytest.raises(ApprovalInvalid) as refused:
        await step.check(Call(request, principal, other), BODY)
    assert refused.value.reason.value == "approval_mismatch"
    approved = await step.check(Call(request, principal, rule), BODY)  # the real requirement
    await step.consume(approved, Call(request, principal, rule))


def _mutations(body: bytes) -> st.SearchStrategy[bytes]:
    flips = st.tuples(st.integers(0, max(0, len(body) - 1)), st.integers(1, 255)).map(
        lambda pair: (
            body[: pair[0]] + bytes([body[pair[0]] ^ pair[1]]) + body[pair[0] + 1 :]
            if body
            else bytes([pair[1]])
        )
    )
    return st.one_of(flips, st.binary(max_size=64)).filter(lambda other: other != body)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.binary(max_size=256).flatmap(lambda body: st.tuples(st.just(body), _mutations(body))))
def test_any_other_body_is_refused_and_the_approved_body_runs(pair: tuple[bytes, bytes]) -> None:
    approved, other = pair

    async def scenario() -> None:
        clock = FakeClock()
        world = await build_world(MemoryStore(clock=clock), clock)
        async with world.client() as client:
            approval_id = await held_and_approved(world, client, "PATCH", "/crm/x", approved)
            response = await client.patch(
                "/crm/x", headers=world.alice.auth(approval_id), content=other
            )
            refusal(response, 403, "approval_invalid", "approval_mismatch")
            assert world.recorder.calls == []
            response = await client.patch(
                "/crm/x", headers=world.alice.auth(approval_id), content=approved
            )
            assert response.status_code == 200, response.text
        [call] = world.recorder.calls
        assert call.body == approved

    anyio.run(scenario)


def _fields(query: str) -> list[str]:
    return [field for field in query.split("&") if field]  # empty fields mean nothing


_QUERY = st.text(st.sampled_from("abxy01=&%+._-~"), max_size=16)


@settings(max_examples=40, deadline=None)
@given(st.tuples(_QUERY, _QUERY).filter(lambda pair: _fields(pair[0]) != _fields(pair[1])))
def test_any_other_query_is_refused(pair: tuple[str, str]) -> None:
    approved, other = pair

    async def scenario() -> None:
        clock = FakeClock()
        world = await build_world(MemoryStore(clock=clock), clock)
        async with world.client() as client:
            url = "/crm/q?" + approved
            approval_id = await held_and_approved(world, client, "DELETE", url)
            response = await client.delete("/crm/q?" + other, headers=world.alice.auth(approval_id))
            assert response.status_code in (400, 403), response.text
            if response.status_code == 403:
                assert response.json()["reason"] == "approval_mismatch"
            assert world.recorder.calls == []
            response = await client.delete(url, headers=world.alice.auth(approval_id))
            assert response.status_code == 200, response.text
        [call] = world.recorder.calls
        assert _fields(call.query) == _fields(approved)

    anyio.run(scenario)
