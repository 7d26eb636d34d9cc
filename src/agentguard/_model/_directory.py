"""Who exists: accounts, their workspaces, their users, and which users belong where.

These records are read live on every request; changing one (disabling a user, removing a
membership, closing an account) takes effect on the very next call.
"""

from __future__ import annotations

import enum

from pydantic import Field

from agentguard._model._base import Identifier, Record
from agentguard._model._grants import Grants

__all__ = ["Account", "AccountStatus", "Membership", "User", "Workspace"]


class AccountStatus(str, enum.Enum):
    """An account is either live or shut down; a closed account's keys all stop working."""

    ACTIVE = "active"
    CLOSED = "closed"


class Account(Record):
    """The top-level tenant. Closing it stops every key and refresh under it."""

    id: Identifier
    name: str = ""
    status: AccountStatus = AccountStatus.ACTIVE

    @property
    def active(self) -> bool:
        return self.status is AccountStatus.ACTIVE


class Workspace(Record):
    """A group of users inside one account; keys are issued for a (user, workspace) pair."""

    id: Identifier
    account_id: Identifier
    name: str = ""


class User(Record):
    """A person (or service identity) an agent acts for.

    ``grants`` is the single source of truth for what the user may do; every key of the user is
    capped by it, live.
    """

    id: Identifier
    account_id: Identifier
    name: str = ""
    enabled: bool = True
    grants: Grants = Field(default_factory=Grants)


class Membership(Record):
    """``user_id`` belongs to ``workspace_id``. Removing it stops the user's keys there."""

    user_id: Identifier
    workspace_id: Identifier
