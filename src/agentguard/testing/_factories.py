"""Builders that put a ready user (account, workspace, membership, grants) into a store."""

from __future__ import annotations

from collections.abc import Mapping

from agentguard._keys._issuer import KeyIssuer
from agentguard._model import Account, Grants, IssuedKeys, Level, User, Workspace
from agentguard.storage._protocols import DirectoryStore

__all__ = ["issue_keys", "make_user"]


async def make_user(
    store: DirectoryStore,
    *,
    user_id: str = "user-1",
    account_id: str = "acct-1",
    workspace_id: str = "ws-1",
    grants: Grants | Mapping[str, Level | str] | str = "crm:read",
    name: str = "",
) -> User:
    """Create (or update) a user with ``grants``, its account, workspace and membership."""
    if await store.get_account(account_id) is None:
        await store.put_account(Account(id=account_id, name=account_id))
    if await store.get_workspace(workspace_id) is None:
        await store.put_workspace(Workspace(id=workspace_id, account_id=account_id))
    if isinstance(grants, str):
        parsed = Grants.from_scope(grants)
    elif isinstance(grants, Grants):
        parsed = grants
    else:
        parsed = Grants(grants)
    user = User(id=user_id, account_id=account_id, name=name or user_id, grants=parsed)
    await store.put_user(user)
    await store.set_membership(user_id, workspace_id, member=True)
    return user


async def issue_keys(
    issuer: KeyIssuer, user: User, *, workspace_id: str = "ws-1", scope: Grants | None = None
) -> IssuedKeys:
    """Issue an access/refresh pair for ``user`` in ``workspace_id``."""
    return await issuer.issue(user.id, workspace_id, scope=scope)
