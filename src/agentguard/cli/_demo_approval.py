"""The approval scene of ``agentguard demo``: a delete held for a human, approved, run once.

The CRM's ``DELETE`` is held by its route rule (``approval={"DELETE"}``). The agent's first call
is refused with ``approval_required``; an operator approves it on the operator listener's JSON
endpoint with an operator token (the code path ``agentguard approvals approve`` takes too); the
agent's retry naming the approval runs once, and a second retry is refused ``approval_used``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx

from agentguard.approvals import APPROVAL_HEADER
from agentguard.approvals._operators import issue_operator_token
from agentguard.asgi._operator import OperatorApp

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    from agentguard._guard import Guard
    from agentguard.cli._demo import _Teller
    from agentguard.storage import SQLiteStore

__all__ = ["Deletions", "tell_approval"]

CONTACT = "/crm/contacts/7"


class Deletions:
    """The CRM's delete endpoint, counting the deletes that reached it."""

    def __init__(self) -> None:
        self.ran: list[str] = []

    async def delete(self, request: Request) -> JSONResponse:
        """Delete one contact (in this demo: remember that it was asked)."""
        from starlette.responses import JSONResponse

        contact = str(request.path_params["contact"])
        self.ran.append(contact)
        return JSONResponse({"deleted": contact})


async def tell_approval(
    tell: _Teller,
    http: httpx.AsyncClient,
    *,
    guard: Guard,
    store: SQLiteStore,
    headers: dict[str, str],
    deletions: Deletions,
) -> str:
    """Tell the approval scene; return the operator token, so the story can check that it
    appears nowhere in the audit log. ``store`` keeps the approvals and operator tokens."""
    tell.title("Deleting a contact needs a human's approval: the call is held")
    tell.say(f"DELETE {CONTACT}")
    held = await http.delete(CONTACT, headers=headers)
    tell.result(held)
    approval_id = str(held.json().get("approval_id", ""))
    tell.say(f"approval {approval_id[:10]}… bound to this call (key family, target, body, rule)")
    tell.say(f"the CRM was not called: {len(deletions.ran)} deletes so far")

    token, _ = await issue_operator_token(store, "maria", clock=guard.clock)
    listener = OperatorApp(guard, approvals=store, operators=store)
    transport = httpx.ASGITransport(app=listener)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8081") as ops:
        decided = await ops.post(
            f"/approvals/{approval_id}/approve",
            headers={"Authorization": f"Bearer {token.reveal()}"},
        )
    document = decided.json()
    tell.say(
        f"operator {document.get('decided_by')} approves it on the operator listener "
        f"(token {token.reveal()[:6]}…): {document.get('state')}"
    )

    retry = {**headers, APPROVAL_HEADER: approval_id}
    tell.say(f"the agent sends the same call again   AgentGuard-Approval: {approval_id[:10]}…")
    tell.result(await http.delete(CONTACT, headers=retry))
    tell.say("and once more, with the same approval")
    tell.result(await http.delete(CONTACT, headers=retry))
    times = "once" if len(deletions.ran) == 1 else f"{len(deletions.ran)} times"
    tell.say(f"the CRM deleted the contact {times}: an approval allows one call")
    return token.reveal()
