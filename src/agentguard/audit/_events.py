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
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from types import MappingProxyType

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
_UTC = timezone.utc
_last_second: tuple[tuple[int, ...] | None, str] = (None, "")
_quote = json.encoder.encode_basestring  # the str form json.dumps writes with ensure_ascii=False

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
    APPROVAL_REQUEST = "approval.request"
    APPROVAL_DECIDE = "approval.decide"
    APPROVAL_CONSUME = "approval.consume"
    OPERATOR_ISSUE = "operator.issue"
    OPERATOR_REVOKE = "operator.revoke"
    CONNECTION_LINK = "connection.link"
    CONNECTION_CONNECT = "connection.connect"
    CONNECTION_REFUSE = "connection.refuse"
    CONNECTION_REFRESH = "connection.refresh"
    CONNECTION_BROKEN = "connection.broken"
    CONNECTION_DISCONNECT = "connection.disconnect"


class Decision(str, enum.Enum):
    """The outcome of a guarded request or a token operation."""

    ALLOW = "allow"
    DENY = "deny"


def rfc3339(moment: datetime) -> str:
    """RFC 3339 UTC with microseconds, e.g. ``2026-01-01T00:00:00.000000Z``."""
    global _last_second  # noqa: PLW0603 - a one-entry cache, replaced whole (atomic)
    if moment.tzinfo is _UTC and type(moment) is datetime:  # the clock's own: no conversion
        # Events come many to a second: format the date and time once per second.
        second = (moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second)
        last = _last_second
        if last[0] != second:
            last = _last_second = (second, moment.isoformat("T", "seconds")[:-6])  # no "+00:00"
        return f"{last[1]}.{moment.microsecond:06d}Z"
    return moment.astimezone(_UTC).replace(tzinfo=None).isoformat("T", "microseconds") + "Z"


_rfc3339 = rfc3339


_NO_DETAIL: Mapping[str, Scalar] = MappingProxyType({})  # "not given": a fresh {} is stored


@dataclass(frozen=True, slots=True, init=False)
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

    def __init__(  # noqa: PLR0917 - the signature the dataclass generated before
        self,
        action: Action,
        ts: datetime,
        decision: Decision | None = None,
        reason: str | None = None,
        user_id: str | None = None,
        workspace_id: str | None = None,
        account_id: str | None = None,
        key_id: str | None = None,
        family_id: str | None = None,
        service: str | None = None,
        method: str | None = None,
        path: str | None = None,
        status: int | None = None,
        latency_us: int | None = None,
        request_id: str | None = None,
        instance: str | None = None,
        detail: Mapping[str, Scalar] = _NO_DETAIL,
    ) -> None:
        # The dataclass's own frozen __init__ goes through object.__setattr__ per field; calling
        # the slots' setters directly costs half as much (one event per guarded request).
        (
            set_action, set_ts, set_decision, set_reason, set_user, set_workspace, set_account,
            set_key, set_family, set_service, set_method, set_path, set_status, set_latency,
            set_request, set_instance, set_detail,
        ) = _SLOT_SETTERS  # fmt: skip
        set_action(self, action)
        set_ts(self, ts)
        set_decision(self, decision)
        set_reason(self, reason)
        set_user(self, user_id)
        set_workspace(self, workspace_id)
        set_account(self, account_id)
        set_key(self, key_id)
        set_family(self, family_id)
        set_service(self, service)
        set_method(self, method)
        set_path(self, path)
        set_status(self, status)
        set_latency(self, latency_us)
        set_request(self, request_id)
        set_instance(self, instance)
        set_detail(self, {} if detail is _NO_DETAIL else detail)

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

    def canonical(self, seq: int, prev: str) -> bytes:
        """``canonical_json(self.body(seq, prev))``: the same bytes, or the same ``ValueError``.

        Events whose fields all have their declared types (the guard's decisions, lifecycle
        events) are written straight into the sorted template, without building the body and
        sorting it; anything else takes :func:`canonical_json`, which gives the verdict.
        """
        text = self._template_json(seq, prev)
        if text is None:
            return canonical_json(self.body(seq, prev))
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("an audit field is not valid Unicode (lone surrogate)") from None
        if len(data) > MAX_EVENT_BYTES:
            raise ValueError(f"audit event exceeds {MAX_EVENT_BYTES} bytes")
        return data

    def _template_json(self, seq: int, prev: str) -> str | None:
        """The canonical text when every field has its declared type; ``None`` otherwise."""
        action, decision = self.action, self.decision
        if type(action) is not Action or (decision is not None and type(decision) is not Decision):
            return None
        texts = []
        for value in (
            self.account_id, self.family_id, self.key_id, self.user_id, self.workspace_id,
            self.instance, self.method, self.path, prev, self.reason, self.request_id,
            self.service,
        ):  # fmt: skip
            if type(value) is str:
                texts.append(_quote(value))
            elif value is None:
                texts.append("null")
            else:
                return None
        numbers = []
        for number in (seq, self.status, self.latency_us):
            if number is None:
                numbers.append("null")
            elif type(number) is int and -MAX_SAFE_INT <= number <= MAX_SAFE_INT:
                numbers.append(str(number))
            else:
                return None
        detail = _detail_json(self.detail) if self.detail else "{}"
        if detail is None:
            return None
        account, family, key_id, user, workspace, instance, method, path, prev_text = texts[:9]
        reason, request_id, service = texts[9:]
        seq_text, status, latency = numbers
        choice = "null" if decision is None else f'"{decision.value}"'
        return (
            f'{{"action":"{action.value}","actor":{{"account":{account},"family":{family},'
            f'"key_id":{key_id},"user":{user},"workspace":{workspace}}},"decision":{choice},'
            f'"detail":{detail},"instance":{instance},"latency_us":{latency},"method":{method},'
            f'"path":{path},"prev":{prev_text},"reason":{reason},"request_id":{request_id},'
            f'"seq":{seq_text},"service":{service},"status":{status},'
            f'"ts":{_quote(rfc3339(self.ts))},"v":{SCHEMA_VERSION}}}'
        )


def _detail_json(detail: Mapping[str, Scalar]) -> str | None:
    """``detail`` as canonical JSON when its keys and values fit the schema; else ``None``."""
    members = []
    for key, value in detail.items():
        if type(key) is not str or not key.isascii():
            return None
        if type(value) is str:
            members.append((key, _quote(value)))
        elif value is None:
            members.append((key, "null"))
        elif value is True or value is False:
            members.append((key, "true" if value else "false"))
        elif type(value) is int and -MAX_SAFE_INT <= value <= MAX_SAFE_INT:
            members.append((key, str(value)))
        else:
            return None
    members.sort()
    return "{" + ",".join(f"{_quote(key)}:{value}" for key, value in members) + "}"


if AuditEvent.__slots__ != tuple(spec.name for spec in fields(AuditEvent)):  # pragma: no cover
    raise RuntimeError("AuditEvent.__init__ sets the slots in field order; keep them in step")
_SLOT_SETTERS = tuple(getattr(AuditEvent, name).__set__ for name in AuditEvent.__slots__)


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
