"""Stored approvals (a human's yes or no to one exact call) and operator token records."""

from __future__ import annotations

import enum
from datetime import datetime

from pydantic import Field

from agentguard._model._base import Identifier, Record, UTCDateTime

__all__ = ["ApprovalRecord", "ApprovalStatus", "OperatorRecord"]


class ApprovalStatus(str, enum.Enum):
    """Where an approval stands. ``expired`` is not stored: it is read from ``expires_at``."""

    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    CONSUMED = "consumed"


class ApprovalRecord(Record):
    """One call an approval rule held back, bound to everything that makes it that call.

    The call runs once, on the agent's retry, only if the retry's ``binding`` equals this one,
    the status is ``approved``, it has not expired and it was never consumed. The guard
    (module ``agentguard.approvals._binding``) computes ``binding`` as the SHA-256 of one JSON
    array of: the key family that asked, the user, the service, the method, the canonical
    target (the path as the guard authorises it, then the query as sent less any field whose
    value is exactly the presented key), the SHA-256 of the exact body and its
    ``Content-Type``, and the version of the rule that held the call. Other headers are not
    bound. A store only keeps and compares the hex string.

    Attributes:
        id: the approval id the agent and the operator name it by (``apr_...``).
        binding: hex SHA-256 of the bound fields above (64 lowercase hex digits).
        family_id / key_id / user_id / workspace_id / account_id: who asked (ids only).
        service: the service the call needs (``None`` for "any valid key" routes).
        scope: the requirement as a scope token (``crm:write``).
        method: the HTTP method.
        path: the request path as audited (no query; agentguard keys replaced by ``[key]``).
        query: the query string for display, agentguard keys replaced by ``[key]``.
        body_digest: ``sha-256:<hex>`` of the exact body; ``body_bytes`` its length.
        body_preview: the body as text (at most 64 KiB: all of it under the default
            ``max_body``), agentguard keys replaced by ``[key]``, for the operator deciding.
        rule_version: hash of the route rule's configuration when the call was held back
            (``RouteRule.version``: 32 hex digits; 16 to 64 are accepted).
        created_at / expires_at: the approval must be decided and used before ``expires_at``.
        decided_at / decided_by: when and by which operator it was approved or denied.
        consumed_at: when the approved call ran (single use).
    """

    id: Identifier
    status: ApprovalStatus = ApprovalStatus.PENDING
    binding: str = Field(pattern=r"^[0-9a-f]{64}$")
    family_id: Identifier
    key_id: Identifier
    user_id: Identifier
    workspace_id: Identifier
    account_id: Identifier
    service: str | None = None
    scope: str
    method: str = Field(pattern=r"^[A-Z0-9!#$%&'*+.^_`|~-]{1,32}$")
    path: str = Field(max_length=1024)
    query: str = Field(default="", max_length=1024)
    body_digest: str = Field(pattern=r"^sha-256:[0-9a-f]{64}$")
    body_bytes: int = Field(ge=0)
    body_preview: str = Field(default="", max_length=65536)
    rule_version: str = Field(pattern=r"^[0-9a-f]{16,64}$")
    created_at: UTCDateTime
    expires_at: UTCDateTime
    decided_at: UTCDateTime | None = None
    decided_by: str | None = Field(default=None, max_length=128)
    consumed_at: UTCDateTime | None = None
    headers: str = Field(default="", max_length=4096)

    def expired(self, now: datetime) -> bool:
        """Whether the approval is past its expiry at ``now`` (the instant itself included)."""
        return now >= self.expires_at

    def state(self, now: datetime) -> str:
        """The status as the agent and operator see it: ``expired`` replaces ``pending`` and
        ``approved`` once ``expires_at`` has passed."""
        if self.status in (ApprovalStatus.PENDING, ApprovalStatus.APPROVED) and self.expired(now):
            return "expired"
        return self.status.value


class OperatorRecord(Record):
    """An operator token as the server keeps it: its SHA-256 hash, never the token.

    Operator tokens (``ag_op_...``) authenticate people and tools on the operator listener
    (approvals, and every operator endpoint to come); an agent key is never accepted there.

    ``token_hash`` is the raw 32-byte SHA-256 digest (``bytes``, not hex): a store keeps the
    bytes. A digest is rarely valid UTF-8, so ``model_dump_json()`` raises on such a record;
    serialise ``token_hash`` yourself (``.hex()``, and ``bytes.fromhex`` to read it back).
    """

    id: Identifier
    name: str = Field(min_length=1, max_length=128)
    token_hash: bytes = Field(min_length=32, max_length=32, repr=False)
    created_at: UTCDateTime
    expires_at: UTCDateTime | None = None
    revoked_at: UTCDateTime | None = None

    def usable(self, now: datetime) -> bool:
        """Whether the token authenticates at ``now``: not revoked, not expired."""
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or now < self.expires_at
