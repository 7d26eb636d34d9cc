"""The agent runtime: holds the agent's keys, signs every call and renews ahead of expiry.

::

    import httpx
    from agentguard.client import AgentAuth

    auth = AgentAuth.from_file("~/.agentguard/credentials.json")
    async with httpx.AsyncClient(auth=auth, base_url="https://api.example.com") as client:
        contacts = await client.get("/crm/contacts")

The keys stay in this process and in the credentials file; they never need to enter the
model's context. ``agentguard keys issue`` writes a ready credentials file.
"""

from __future__ import annotations

from agentguard.client._auth import AgentAuth, KeyPlacement
from agentguard.client._credentials_file import AgentCredentials, CredentialsFile
from agentguard.client._errors import (
    AgentAuthError,
    CredentialsFileError,
    DPoPNonceLoop,
    RefreshFailed,
)
from agentguard.client._renewal import Renewer

__all__ = [
    "AgentAuth",
    "AgentAuthError",
    "AgentCredentials",
    "CredentialsFile",
    "CredentialsFileError",
    "DPoPNonceLoop",
    "KeyPlacement",
    "RefreshFailed",
    "Renewer",
]
