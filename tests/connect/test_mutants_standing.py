"""Mutation-round pins for user_standing: the live answer to "may this user connect now"."""

from __future__ import annotations

import pytest

from agentguard._model import Account, AccountStatus
from agentguard._reasons import Reason
from agentguard.connect._standing import user_standing
from agentguard.storage import MemoryStore
from agentguard.testing import make_user

pytestmark = pytest.mark.anyio


class NoAccounts(MemoryStore):
    """A directory whose account record is gone (deleted, or never written)."""

    async def get_account(self, account_id: str) -> Account | None:
        return None


async def test_a_fit_user_has_no_problem() -> None:
    store = MemoryStore()
    await make_user(store, user_id="alice", grants="crm:write")
    standing = await user_standing(store, "alice")
    assert standing.user is not None and standing.user.id == "alice"
    assert standing.problem is None


async def test_an_unknown_user_is_named_unknown_user() -> None:
    standing = await user_standing(MemoryStore(), "ghost")
    assert standing == (None, Reason.UNKNOWN_USER)


async def test_a_user_whose_account_record_is_missing_may_not_connect() -> None:
    store = NoAccounts()
    await make_user(store, user_id="alice", grants="crm:write")
    standing = await user_standing(store, "alice")
    assert standing.user is not None and standing.problem is Reason.ACCOUNT_CLOSED


async def test_a_closed_account_is_named_account_closed() -> None:
    store = MemoryStore()
    user = await make_user(store, user_id="alice", grants="crm:write")
    await store.put_account(Account(id=user.account_id, status=AccountStatus.CLOSED))
    standing = await user_standing(store, "alice")
    assert standing.problem is Reason.ACCOUNT_CLOSED
