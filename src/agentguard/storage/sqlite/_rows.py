"""Converting records to SQLite parameters and rows back to records.

Column order follows the statements in ``_queries``.

Times become integer microseconds since the Unix epoch in UTC, so every stored instant reads
back equal to the one written; grants become compact JSON text.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from agentguard.clock import utc
from agentguard.model import (
    Account,
    AccountStatus,
    CredentialOwner,
    CredentialScope,
    Grants,
    KeyKind,
    KeyRecord,
    StoredCredential,
    User,
    Workspace,
)
from agentguard.storage.protocols import KeyLookup

__all__ = [
    "account_from_row",
    "account_params",
    "credential_from_row",
    "credential_params",
    "from_micros",
    "key_from_row",
    "key_params",
    "lookup_from_row",
    "micros",
    "user_from_row",
    "user_params",
    "workspace_from_row",
    "workspace_params",
]

Row = Sequence[Any]
Params = tuple[Any, ...]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


def micros(moment: datetime) -> int:
    """``moment`` as whole microseconds since the epoch; naive datetimes raise ``ValueError``."""
    return (utc(moment) - _EPOCH) // _MICROSECOND


def from_micros(value: int) -> datetime:
    """The aware UTC datetime stored as ``value`` microseconds since the epoch."""
    return _EPOCH + timedelta(microseconds=value)


def _optional_micros(moment: datetime | None) -> int | None:
    return None if moment is None else micros(moment)


def _optional_time(value: int | None) -> datetime | None:
    return None if value is None else from_micros(value)


def _grants_json(grants: Grants) -> str:
    return json.dumps(grants.to_dict(), sort_keys=True, separators=(",", ":"))


def _grants(text: str) -> Grants:
    return Grants(json.loads(text))


def account_params(account: Account) -> Params:
    return (account.id, account.name, account.status.value)


def account_from_row(row: Row) -> Account:
    return Account(id=row[0], name=row[1], status=AccountStatus(row[2]))


def workspace_params(workspace: Workspace) -> Params:
    return (workspace.id, workspace.account_id, workspace.name)


def workspace_from_row(row: Row) -> Workspace:
    return Workspace(id=row[0], account_id=row[1], name=row[2])


def user_params(user: User) -> Params:
    return (user.id, user.account_id, user.name, int(user.enabled), _grants_json(user.grants))


def user_from_row(row: Row) -> User:
    return User(
        id=row[0],
        account_id=row[1],
        name=row[2],
        enabled=bool(row[3]),
        grants=_grants(row[4]),
    )


def key_params(record: KeyRecord) -> Params:
    return (
        record.id,
        record.kind.value,
        record.key_hash,
        record.family_id,
        record.user_id,
        record.workspace_id,
        record.account_id,
        micros(record.created_at),
        micros(record.expires_at),
        _optional_micros(record.revoked_at),
        record.revoked_reason,
        _optional_micros(record.used_at),
        None if record.scope is None else _grants_json(record.scope),
        record.jkt,
    )


def key_from_row(row: Row) -> KeyRecord:
    return KeyRecord(
        id=row[0],
        kind=KeyKind(row[1]),
        key_hash=bytes(row[2]),
        family_id=row[3],
        user_id=row[4],
        workspace_id=row[5],
        account_id=row[6],
        created_at=from_micros(row[7]),
        expires_at=from_micros(row[8]),
        revoked_at=_optional_time(row[9]),
        revoked_reason=row[10],
        used_at=_optional_time(row[11]),
        scope=None if row[12] is None else _grants(row[12]),
        jkt=row[13],
    )


_USER_AT = 14  # KEY_LOOKUP selects 14 key columns, 5 user, 3 account, then the member flag
_ACCOUNT_AT = _USER_AT + 5
_MEMBER_AT = _ACCOUNT_AT + 3


def lookup_from_row(row: Row) -> KeyLookup:
    """Decode a row of key columns, user columns, account columns and a member flag."""
    user_row = row[_USER_AT:_ACCOUNT_AT]
    account_row = row[_ACCOUNT_AT:_MEMBER_AT]
    return KeyLookup(
        key=key_from_row(row[:_USER_AT]),
        user=None if user_row[0] is None else user_from_row(user_row),
        account=None if account_row[0] is None else account_from_row(account_row),
        member=bool(row[_MEMBER_AT]),
    )


def credential_params(credential: StoredCredential) -> Params:
    return (
        credential.service,
        credential.owner_kind.value,
        credential.owner_id,
        credential.id,
        credential.scope.value,
        credential.ciphertext,
        credential.key_id,
        micros(credential.created_at),
    )


def credential_from_row(row: Row) -> StoredCredential:
    return StoredCredential(
        service=row[0],
        owner_kind=CredentialOwner(row[1]),
        owner_id=row[2],
        id=row[3],
        scope=CredentialScope(row[4]),
        ciphertext=bytes(row[5]),
        key_id=row[6],
        created_at=from_micros(row[7]),
    )
