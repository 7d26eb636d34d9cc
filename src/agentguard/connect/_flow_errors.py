"""The refusals of the connect flow: a link or an authorization that cannot be used."""

from __future__ import annotations

from typing import ClassVar

from agentguard._reasons import Reason
from agentguard.errors import RequestRefused

__all__ = [
    "COOKIE_AMBIGUOUS",
    "ISSUER_WRONG",
    "LINK_GONE",
    "LINK_MALFORMED",
    "LINK_OTHER_SERVICE",
    "STATE_GONE",
    "STATE_OTHER_SERVICE",
    "STATE_UNREADABLE",
    "WRONG_BROWSER",
    "ConnectRefused",
    "standing_refused",
]

LINK_GONE = "this connect link was already used or has expired; ask your operator for a new one"
LINK_MALFORMED = (
    "this connect link is not valid; check that it was copied whole, or ask your operator for "
    "a new one"
)
LINK_OTHER_SERVICE = "this connect link is for another service"
STATE_GONE = (
    "this authorization was already used or has expired; start the connection again from the "
    "beginning"
)
STATE_OTHER_SERVICE = "this authorization was started for another service"
STATE_UNREADABLE = (
    "this authorization can no longer be completed (the server's keys changed); start the "
    "connection again"
)
WRONG_BROWSER = "the connection must be finished in the browser that started it"
COOKIE_AMBIGUOUS = (
    "your browser sent the connection cookie of this site more than once (another site may have "
    "set one); nothing was connected: clear the cookies of this site, then start the connection "
    "again from the connect link"
)
ISSUER_WRONG = (
    "the answer did not come from {service}'s own authorization server (it named another "
    "issuer, or none where {service} always names itself); nothing was connected: start the "
    "connection again from the beginning"
)

_STANDING = {
    Reason.UNKNOWN_USER: "agentguard has no user {user}, so nothing can be connected for them",
    Reason.USER_DISABLED: (
        "agentguard user {user} is disabled, so nothing can be connected for them"
    ),
    Reason.ACCOUNT_CLOSED: (
        "the account agentguard user {user} belongs to is closed, so nothing can be connected "
        "for them"
    ),
}
_ASK = "; ask your operator"


class ConnectRefused(RequestRefused):
    """403 ``access_denied``: a step of the connect flow was refused.

    The description says which, in words a person can act on, and never repeats the link,
    the ``state`` or the code. An unknown link and a used one read the same
    (:data:`LINK_GONE`): the answer does not tell which links ever existed.

    Attributes:
        service: the service the step was for.
        user_id: the user, when the step got far enough to know it.
    """

    status = 403
    error: ClassVar[str | None] = "access_denied"
    default_reason = Reason.CONNECT_REFUSED

    def __init__(
        self,
        description: str,
        *,
        service: str | None = None,
        user_id: str | None = None,
        reason: Reason | None = None,
    ) -> None:
        self.service = service
        self.user_id = user_id
        super().__init__(description, reason=reason)


def standing_refused(problem: Reason, *, service: str, user_id: str) -> ConnectRefused:
    """The refusal for a user who may not connect accounts now (see
    :func:`~agentguard.connect._standing.user_standing`), with ``problem`` as its reason."""
    description = _STANDING.get(problem, _STANDING[Reason.UNKNOWN_USER]).format(user=user_id)
    return ConnectRefused(description + _ASK, service=service, user_id=user_id, reason=problem)
