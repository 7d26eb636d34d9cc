"""Approval records as the approval step would store them, for the operator-side tests."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from agentguard._model import ApprovalRecord

__all__ = ["held_call"]


def held_call(
    now: datetime,
    *,
    user_id: str = "alice",
    method: str = "POST",
    path: str = "/crm/contacts",
    body: bytes = b'{"name": "Ada"}',
    ttl: timedelta = timedelta(minutes=15),
    age: timedelta = timedelta(0),
) -> ApprovalRecord:
    """A pending approval created ``age`` before ``now``, with a fresh id and binding."""
    created = now - age
    return ApprovalRecord(
        id="apr_" + secrets.token_urlsafe(16),
        binding=secrets.token_hex(32),
        family_id="fam_" + secrets.token_hex(8),
        key_id="key_" + secrets.token_hex(8),
        user_id=user_id,
        workspace_id="sales",
        account_id="acme",
        service="crm",
        scope="crm:write",
        method=method,
        path=path,
        query="",
        body_digest="sha-256:" + hashlib.sha256(body).hexdigest(),
        body_bytes=len(body),
        body_preview=body.decode("utf-8", "replace")[:2048],
        rule_version="ab" * 16,
        created_at=created,
        expires_at=created + ttl,
    )
