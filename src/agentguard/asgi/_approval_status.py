"""``GET /approvals/{id}`` under the OAuth app: where an agent's runtime polls its approval.

The agent authenticates with its own access key, exactly as on any guarded call (DPoP proof
and nonce included, every poll audited), and with any valid key: the endpoint needs no grant.
It sees only approvals of its own user: another user's approval, an unknown id and a malformed
one all answer the same ``404 unknown_approval``, so the endpoint cannot be used to learn which
approvals exist. The answer holds the state and the times, nothing about the call itself
(the body preview and query stay with the operator).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar

from agentguard._model import Level
from agentguard._permissions import Requirement
from agentguard.asgi._responses import send_error, send_json
from agentguard.asgi._scope import request_from_scope
from agentguard.asgi._types import Scope, Send
from agentguard.errors import MethodNotAllowed, Reason, RequestRefused, StoreUnavailable
from agentguard.storage._outage import store_outage

if TYPE_CHECKING:
    from agentguard._guard import Guard

__all__ = ["APPROVALS_PREFIX", "ApprovalNotFound", "ApprovalStatusEndpoint"]

APPROVALS_PREFIX = "/approvals/"
"""The endpoint's path below the OAuth app's mount, followed by the approval id."""

_NO_STORE = [("cache-control", "no-store"), ("pragma", "no-cache")]
_APPROVAL_ID = re.compile(r"apr_[A-Za-z0-9_-]{1,64}\Z")
_ANY_KEY = Requirement(None, Level.READ, cost=0)  # polling an approval spends no budget


class ApprovalNotFound(RequestRefused):
    """404: no approval of the caller's with this id (or approvals are not enabled)."""

    status = 404
    error: ClassVar[str | None] = "not_found"
    default_reason = Reason.UNKNOWN_APPROVAL


def _iso(instant: datetime | None) -> str | None:
    return None if instant is None else instant.isoformat().replace("+00:00", "Z")


class ApprovalStatusEndpoint:
    """Answers ``GET /approvals/{id}`` for the OAuth app (see the module docstring)."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard

    async def __call__(self, scope: Scope, send: Send, approval_id: str) -> None:
        """Answer one request for ``approval_id`` (the path segment after the prefix)."""
        try:
            if scope["method"] != "GET":
                raise MethodNotAllowed(("GET",))
            document = await self._status(scope, approval_id)
        except RequestRefused as error:
            await send_error(scope, send, error, self.guard.challenge)
            return
        await send_json(send, 200, document, _NO_STORE)

    async def _status(self, scope: Scope, approval_id: str) -> dict[str, object]:
        request = request_from_scope(scope)
        principal = await self.guard.authenticate(request, requirement=_ANY_KEY)
        store = self.guard.approval_store
        if store is None:
            raise ApprovalNotFound("approvals are not enabled on this server")
        if not _APPROVAL_ID.match(approval_id):
            raise ApprovalNotFound()
        try:
            with store_outage("approval store", "get_approval"):
                record = await store.get_approval(approval_id)
        except StoreUnavailable as outage:  # audited like every outage, after the allowed poll
            raise await self.guard.refuse(request, outage, principal=principal) from None
        if record is None or record.user_id != principal.user_id:
            raise ApprovalNotFound()
        return {
            "approval_id": record.id,
            "state": record.state(self.guard.clock.now()),
            "expires_at": _iso(record.expires_at),
            "decided_at": _iso(record.decided_at),
        }
