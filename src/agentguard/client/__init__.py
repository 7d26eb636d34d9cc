"""The agent runtime: holds the agent's keys, signs every call and renews ahead of expiry.

::

    import httpx
    from agentguard.client import AgentAuth

    auth = AgentAuth.from_file("~/.agentguard/credentials.json")
    async with httpx.AsyncClient(auth=auth, base_url="https://api.example.com") as client:
        contacts = await client.get("/crm/contacts")

The keys stay in this process and in the credentials file; they never need to enter the
model's context. ``agentguard keys issue`` writes a ready credentials file.

A call a rule holds for a human's approval raises :class:`ApprovalPending`; wait for the
decision outside the model and send the same call again naming the approval::

    try:
        deal = await client.post("/crm/deals", json=payload)
    except ApprovalPending as pending:
        await auth.wait_for_approval(pending)
        deal = await client.post("/crm/deals", json=payload, headers=pending.retry_headers)
"""

from __future__ import annotations

from agentguard.client._auth import AgentAuth, KeyPlacement
from agentguard.client._credentials_file import AgentCredentials, CredentialsFile
from agentguard.client._errors import (
    AgentAuthError,
    ApprovalDenied,
    ApprovalExpired,
    ApprovalPending,
    ApprovalRefused,
    ApprovalTimeout,
    ApprovalWaitFailed,
    CredentialsFileError,
    DPoPNonceLoop,
    RefreshFailed,
)
from agentguard.client._renewal import Renewer

__all__ = [
    "AgentAuth",
    "AgentAuthError",
    "AgentCredentials",
    "ApprovalDenied",
    "ApprovalExpired",
    "ApprovalPending",
    "ApprovalRefused",
    "ApprovalTimeout",
    "ApprovalWaitFailed",
    "CredentialsFile",
    "CredentialsFileError",
    "DPoPNonceLoop",
    "KeyPlacement",
    "RefreshFailed",
    "Renewer",
]
