"""Operator tokens: how people and tools authenticate on the operator listener.

    ag_op_ 4Qh1...(43 base62 characters = 256 bits)... 0bX9Zq
    prefix  body                                        checksum (CRC32 of prefix+body, 6 base62)

The same shape as agent keys (:mod:`agentguard._keys._format`), with its own prefix so a
scanner, a log reviewer or a person tells the two apart at a glance. The server stores only the
token's SHA-256 (:attr:`OperatorRecord.token_hash`); the token is shown once, when issued.

An agent key is never an operator credential: presenting one is refused with
:class:`AgentKeyRefused`, which says so plainly, so an operator who pasted the wrong secret
learns why, and an agent that found the operator listener gains nothing by trying its key.
"""

from __future__ import annotations

import hmac
import secrets
from datetime import datetime, timedelta

from agentguard._clock import Clock
from agentguard._keys._format import (
    _MAX_BODY,
    BODY_LENGTH,
    CHECKSUM_LENGTH,
    PREFIX_LENGTH,
    _base62,
    _checksum,
    hash_key,
    new_id,
)
from agentguard._model import OperatorRecord
from agentguard._secret import Secret
from agentguard.errors import InvalidToken, MalformedKey, Reason
from agentguard.storage._gate_protocols import OperatorStore

__all__ = [
    "OPERATOR_PREFIX",
    "OPERATOR_TOKEN_LENGTH",
    "AgentKeyRefused",
    "authenticate_operator",
    "generate_operator_token",
    "hash_operator_token",
    "issue_operator_token",
    "parse_operator_token",
    "revoke_operator_token",
]

OPERATOR_PREFIX = "ag_op_"
OPERATOR_TOKEN_LENGTH = PREFIX_LENGTH + BODY_LENGTH + CHECKSUM_LENGTH
_AGENT_PREFIXES = ("ag_at_", "ag_rt_")


class AgentKeyRefused(InvalidToken):
    """401 ``invalid_token``: an agent key was presented where only operator tokens count."""

    default_reason = Reason.WRONG_KEY_KIND

    def __init__(self) -> None:
        super().__init__(
            "agent keys are not accepted on the operator listener; "
            "use an operator token (ag_op_..., from: agentguard operators issue)"
        )


def generate_operator_token() -> Secret:
    """A new random operator token (256 bits from :mod:`secrets`)."""
    head = OPERATOR_PREFIX + _base62(secrets.randbits(256), BODY_LENGTH)
    return Secret(head + _checksum(head))


def parse_operator_token(value: object) -> str:
    """Check a presented operator token's syntax and checksum; return it.

    Raises :class:`AgentKeyRefused` for anything that starts like an agent key and
    :class:`~agentguard.errors.MalformedKey` (an :class:`InvalidToken`) for anything else that
    is not an operator token. Never raises anything else, whatever ``value`` is, and never
    echoes the value.
    """
    if not isinstance(value, str):
        raise MalformedKey("the operator token must be a string")
    if value.startswith(_AGENT_PREFIXES):
        raise AgentKeyRefused()
    if not value.startswith(OPERATOR_PREFIX):
        raise MalformedKey("an operator token starts with 'ag_op_'")
    if len(value) != OPERATOR_TOKEN_LENGTH:
        raise MalformedKey(f"an operator token is exactly {OPERATOR_TOKEN_LENGTH} characters long")
    tail = value[PREFIX_LENGTH:]
    if not (tail.isascii() and tail.isalnum()):  # ASCII alphanumerics are exactly base62
        raise MalformedKey("an operator token contains only base62 characters after its prefix")
    if tail[:BODY_LENGTH] > _MAX_BODY:  # the alphabet is in code-point order
        raise MalformedKey("the operator token's random part is out of range")
    head, checksum = value[:-CHECKSUM_LENGTH], value[-CHECKSUM_LENGTH:]
    if not hmac.compare_digest(_checksum(head), checksum):
        raise MalformedKey(
            "the operator token's checksum does not match; it was mistyped or truncated"
        )
    return value


def hash_operator_token(token: str) -> bytes:
    """SHA-256 of the token: the only form of it the server stores."""
    return hash_key(token)


async def issue_operator_token(
    store: OperatorStore, name: str, *, clock: Clock, ttl: timedelta | None = None
) -> tuple[Secret, OperatorRecord]:
    """Create an operator token named ``name``; return it (show it once) and its record.

    ``ttl`` ``None`` makes a token that lasts until revoked; otherwise it must be positive.
    Only the record (with the token's hash) is stored.
    """
    if ttl is not None and ttl <= timedelta(0):
        raise ValueError("an operator token's lifetime must be positive")
    token = generate_operator_token()
    now = clock.now()
    record = OperatorRecord(
        id=new_id("op"),
        name=name,
        token_hash=hash_operator_token(token.reveal()),
        created_at=now,
        expires_at=now + ttl if ttl is not None else None,
    )
    await store.put_operator(record)
    return token, record


async def authenticate_operator(
    store: OperatorStore, token: object, *, now: datetime
) -> OperatorRecord:
    """The operator record ``token`` belongs to, if it may act at ``now``.

    Raises :class:`AgentKeyRefused` for an agent key and
    :class:`~agentguard.errors.InvalidToken` (401) for a malformed, unknown, revoked or expired
    token. A storage failure propagates as the store raises it.
    """
    presented = parse_operator_token(token)
    digest = hash_operator_token(presented)
    record = await store.lookup_operator(digest)
    # the store found it by hash; comparing again in constant time costs nothing and keeps a
    # backend with a loose lookup from authenticating the wrong token
    if record is None or not hmac.compare_digest(record.token_hash, digest):
        raise InvalidToken("unknown operator token", reason=Reason.UNKNOWN_KEY)
    if record.revoked_at is not None:
        raise InvalidToken("the operator token was revoked", reason=Reason.REVOKED).with_context(
            key_id=record.id
        )
    if not record.usable(now):
        raise InvalidToken("the operator token expired", reason=Reason.EXPIRED).with_context(
            key_id=record.id
        )
    return record


async def revoke_operator_token(store: OperatorStore, operator_id: str, *, now: datetime) -> bool:
    """Revoke the operator token with this id; ``True`` if it was live until now."""
    return await store.revoke_operator(operator_id, now=now)
