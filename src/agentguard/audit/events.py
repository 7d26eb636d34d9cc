"""The audit event schema and its canonical byte form.

An :class:`AuditEvent` is what a component records; the :class:`~agentguard.storage.AuditStore`
assigns its position (``seq``) and links it to the previous event (``prev``) when it appends.
The body is a closed schema: ASCII snake_case keys, values that are str, int within
±(2**53 - 1), bool or null; no floats. For such a schema, sorted compact ``json.dumps`` gives the
same bytes as RFC 8785 (JCS), which the test suite checks against the ``rfc8785`` package.

Never put a key, a credential or a request body in an event: keys appear only as their id.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone

__all__ = [
    "SCHEMA_VERSION",
    "Action",
    "AuditEvent",
    "Decision",
    "canonical_json",
]

SCHEMA_VERSION = 1
MAX_SAFE_INT = 2**53 - 1
MAX_EVENT_BYTES = 16 * 1024

Scalar = str | int | bool | None


class Action(str, enum.Enum):
    """What happened."""

    GENESIS = "audit.genesis"
    DECISION = "guard.decision"
    KEY_ISSUE = "key.issue"
    KEY_REFRESH = "key.refresh"
    KEY_REUSE_DETECTED = "key.reuse_detected"
    KEY_REVOKE = "key.revoke"
    USER_DISABLE = "user.disable"
    USER_ENABLE = "user.enable"
    GRANT_CHANGE = "grant.change"
    MEMBERSHIP_REMOVE = "membership.remove"
    ACCOUNT_CLOSE = "account.close"
    ACCOUNT_REOPEN = "account.reopen"
    CREDENTIAL_SET = "credential.set"
    CREDENTIAL_DELETE = "credential.delete"
    CREDENTIAL_REKEY = "credential.rekey"
    CREDENTIAL_MINT = "credential.mint"
    PROXY_UPSTREAM = "proxy.upstream"
    REVIEW = "review.verdict"
    REFUSAL_SUMMARY = "guard.refusal_summary"


class Decision(str, enum.Enum):
    """The outcome of a guarded request or a token operation."""

    ALLOW = "allow"
    DENY = "deny"


def rfc3339(moment: datetime) -> str:
    """RFC 3339 UTC with microseconds, e.g. ``2026-01-01T00:00:00.000000Z``."""
    return moment.astimezone(timezone.utc).replace(tzinfo=None).isoformat("T", "microseconds") + "Z"


_rfc3339 = rfc3339


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One decision or lifecycle action, before the store gives it a place in the chain."""

    action: Action
    ts: datetime
    decision: Decision | None = None
    reason: str | None = None
    user_id: str | None = None
    workspace_id: str | None = None
    account_id: str | None = None
    key_id: str | None = None
    family_id: str | None = None
    service: str | None = None
    method: str | None = None
    path: str | None = None
    status: int | None = None
    latency_us: int | None = None
    request_id: str | None = None
    instance: str | None = None
    detail: Mapping[str, Scalar] = field(default_factory=dict)

    def body(self, seq: int, prev: str) -> dict[str, Scalar | dict[str, Scalar]]:
        """The event as a JSON object at position ``seq`` after the event hashed ``prev``."""
        return {
            "v": SCHEMA_VERSION,
            "seq": seq,
            "prev": prev,
            "ts": _rfc3339(self.ts),
            "instance": self.instance,
            "request_id": self.request_id,
            "actor": {
                "user": self.user_id,
                "workspace": self.workspace_id,
                "account": self.account_id,
                "key_id": self.key_id,
                "family": self.family_id,
            },
            "action": self.action.value,
            "service": self.service,
            "method": self.method,
            "path": self.path,
            "decision": self.decision.value if self.decision is not None else None,
            "reason": self.reason,
            "status": self.status,
            "latency_us": self.latency_us,
            "detail": dict(self.detail),
        }


def _check_scalar(value: object, where: str) -> None:
    if value is None or isinstance(value, (str, bool)):
        return
    if isinstance(value, int):
        if not -MAX_SAFE_INT <= value <= MAX_SAFE_INT:
            raise ValueError(f"audit field {where} is outside the JSON safe integer range")
        return
    raise ValueError(f"audit field {where} has unsupported type {type(value).__name__}")


def _check(body: Mapping[str, object]) -> None:
    """Enforce the closed schema: ASCII string keys; str, safe int, bool or null values.

    One level of nesting (``actor``, ``detail``) is allowed. Strings are checked for valid
    Unicode by the UTF-8 encoding in :func:`canonical_json`.
    """
    for key, value in body.items():
        if not isinstance(key, str) or not key.isascii():
            raise ValueError("audit field names are ASCII strings")
        if type(value) is str or value is None:
            continue
        if isinstance(value, dict):
            for inner_key, inner in value.items():
                if not isinstance(inner_key, str) or not inner_key.isascii():
                    raise ValueError(f"audit field {key} has a non-ASCII or non-string key")
                if type(inner) is not str and inner is not None:
                    _check_scalar(inner, f"{key}.{inner_key}")
        else:
            _check_scalar(value, key)


def canonical_json(body: Mapping[str, object]) -> bytes:
    """The canonical (RFC 8785-compatible for this schema) UTF-8 bytes of ``body``."""
    _check(body)
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("an audit field is not valid Unicode (lone surrogate)") from None
    if len(data) > MAX_EVENT_BYTES:
        raise ValueError(f"audit event exceeds {MAX_EVENT_BYTES} bytes")
    return data
