"""The user's live state is decided again on the approved retry, before the approval is used.

An approval is not a grant: a user disabled, a key revoked, a grant lowered or a membership
removed between the approval and the retry refuses the retry with that live reason, and the
approval is not consumed (the approval step runs after the live checks: see
``agentguard.approvals._step``). Restoring the state lets the same approval run its call once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from agentguard._model import ApprovalStatus
from agentguard.testing import make_user
from tests.gates.support import World, held_and_approved

pytestmark = pytest.mark.anyio

BODY = b'{"amount": 100}'
URL = "/crm/invoices"
Change = Callable[[World], Awaitable[None]]


async def _disable(world: World) -> None:
    user = await world.store.get_user("alice")
    await world.store.put_user(user.model_copy(update={"enabled": False}))


async def _lower(world: World) -> None:
    await make_user(world.store, user_id="alice", grants="crm:read")


async def _leave(world: World) -> None:
    await world.store.set_membership("alice", "ws-1", member=False)


async def _enable(world: World) -> None:
    user = await world.store.get_user("alice")
    await world.store.put_user(user.model_copy(update={"enabled": True}))


async def _raise(world: World) -> None:
    await make_user(world.store, user_id="alice", grants="crm:write")


async def _join(world: World) -> None:
    await world.store.set_membership("alice", "ws-1", member=True)


CHANGES: dict[str, tuple[Change, Change, int]] = {
    "user disabled": (_disable, _enable, 401),
    "grant lowered": (_lower, _raise, 403),
    "membership removed": (_leave, _join, 401),
}


async def _retry(world: World, approval_id: str) -> tuple[int, str]:
    async with world.client() as client:
        response = await client.post(URL, headers=world.alice.auth(approval_id), content=BODY)
    return response.status_code, response.json().get("reason", "") if response.content else ""


async def _approved(world: World) -> str:
    async with world.client() as client:
        return await held_and_approved(world, client, "POST", URL, BODY)


@pytest.mark.parametrize("change", list(CHANGES))
async def test_a_live_refusal_leaves_the_approval_unused(world: World, change: str) -> None:
    take, restore, status = CHANGES[change]
    approval_id = await _approved(world)
    await take(world)
    refused, reason = await _retry(world, approval_id)
    assert refused == status and not reason.startswith("approval"), (refused, reason)
    record = await world.store.get_approval(approval_id)
    assert record.status is ApprovalStatus.APPROVED and record.consumed_at is None
    assert world.recorder.calls == []
    await restore(world)
    assert await _retry(world, approval_id) == (200, "")
    assert len(world.recorder.calls) == 1
    assert (await _retry(world, approval_id))[1] == "approval_used"


async def test_a_revoked_key_cannot_use_its_approval(world: World) -> None:
    approval_id = await _approved(world)
    await world.guard.issuer.revoke(key_id=world.alice.key_id)
    refused, reason = await _retry(world, approval_id)
    assert refused == 401 and reason == "revoked"
    record = await world.store.get_approval(approval_id)
    assert record.status is ApprovalStatus.APPROVED
    async with world.client() as client:  # the other family is not the one approved
        response = await client.post(URL, headers=world.alice2.auth(approval_id), content=BODY)
    assert response.json()["reason"] == "approval_mismatch"
    assert world.recorder.calls == []
