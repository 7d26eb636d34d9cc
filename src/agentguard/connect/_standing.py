"""Whether a user may have accounts connected for them right now, read live from the directory.

A connect link is issued for an enabled user of an active account, but it lives for minutes and
an authorization for minutes more: the user may be disabled, or the account closed, meanwhile.
So every step that acts for a user (issuing a link, opening or using one, a signed-in user's
page, the vendor's callback) asks the directory again, the same way: the user exists, is enabled,
and their account exists and is active.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from agentguard._reasons import Reason
from agentguard.storage._outage import store_outage

if TYPE_CHECKING:
    from agentguard._model import User
    from agentguard.storage._protocols import DirectoryStore

__all__ = ["Standing", "user_standing"]


class Standing(NamedTuple):
    """A user as the directory has them now.

    Attributes:
        user: the user record (``None``: no such user).
        problem: why nothing may be connected for them (``unknown_user``, ``user_disabled``,
            ``account_closed``), or ``None`` when they may.
    """

    user: User | None
    problem: Reason | None


async def user_standing(directory: DirectoryStore, user_id: str) -> Standing:
    """Read ``user_id`` and their account live; a store failure is
    :class:`~agentguard.errors.StoreUnavailable` (503), never an answer."""
    with store_outage("directory", "get_user"):
        user = await directory.get_user(user_id)
    if user is None:
        return Standing(None, Reason.UNKNOWN_USER)
    if not user.enabled:
        return Standing(user, Reason.USER_DISABLED)
    with store_outage("directory", "get_account"):
        account = await directory.get_account(user.account_id)
    if account is None or not account.active:
        return Standing(user, Reason.ACCOUNT_CLOSED)
    return Standing(user, None)
