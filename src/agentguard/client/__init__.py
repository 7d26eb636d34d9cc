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

A service that acts with the user's own connected vendor account raises
:class:`AccountConnectionRequired` while the user has none that works: report
``error.connect_uri`` to the person; retrying cannot help until they connect it.
"""

from __future__ import annotations

from agentguard.client._auth import AgentAuth, KeyPlacement
from agentguard.client._credentials_file import AgentCredentials, CredentialsFile
from agentguard.client._errors import (
    AccountConnectionRequired,
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
    "AccountConnectionRequired",
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
