"""Converting records to asyncpg parameters and rows back to records.

Column order follows the statements in ``_queries``. Times travel as aware datetimes
(``timestamptz``, exact to the microsecond, read back in UTC); grants as JSON text that
PostgreSQL stores as ``jsonb``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from agentguard.audit.chain import AuditEntry
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
    "entry_from_row",
    "key_columns",
    "key_from_row",
    "lookup_from_row",
    "user_from_row",
    "user_params",
    "workspace_from_row",
    "workspace_params",
]

Row = Sequence[Any]
Params = tuple[Any, ...]


def _optional_utc(moment: datetime | None) -> datetime | None:
    return None if moment is None else utc(moment)


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
    return (user.id, user.account_id, user.name, user.enabled, _grants_json(user.grants))


def user_from_row(row: Row) -> User:
    return User(
        id=row[0],
        account_id=row[1],
        name=row[2],
        enabled=bool(row[3]),
        grants=_grants(row[4]),
    )


def key_columns(records: Sequence[KeyRecord]) -> Params:
    """The 14 key columns of ``records`` as 14 arrays, for one ``unnest`` insert."""
    columns: list[list[Any]] = [[] for _ in range(14)]
    for record in records:
        values = (
            record.id,
            record.kind.value,
            record.key_hash,
            record.family_id,
            record.user_id,
            record.workspace_id,
            record.account_id,
            utc(record.created_at),
            utc(record.expires_at),
            _optional_utc(record.revoked_at),
            record.revoked_reason,
            _optional_utc(record.used_at),
            None if record.scope is None else _grants_json(record.scope),
            record.jkt,
        )
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    return tuple(columns)


def key_from_row(row: Row) -> KeyRecord:
    return KeyRecord(
        id=row[0],
        kind=KeyKind(row[1]),
        key_hash=bytes(row[2]),
        family_id=row[3],
        user_id=row[4],
        workspace_id=row[5],
        account_id=row[6],
        created_at=row[7],
        expires_at=row[8],
        revoked_at=row[9],
        revoked_reason=row[10],
        used_at=row[11],
        scope=None if row[12] is None else _grants(row[12]),
        jkt=row[13],
    )


_USER_AT = 14  # KEY_LOOKUP selects 14 key columns, 5 user, 3 account, then the member flag
_ACCOUNT_AT = _USER_AT + 5
_MEMBER_AT = _ACCOUNT_AT + 3


def lookup_from_row(row: Row) -> KeyLookup:
    """Decode a row of key columns, user columns, account columns and a member flag."""
    values = tuple(row)
    user_row = values[_USER_AT:_ACCOUNT_AT]
    account_row = values[_ACCOUNT_AT:_MEMBER_AT]
    return KeyLookup(
        key=key_from_row(values[:_USER_AT]),
        user=None if user_row[0] is None else user_from_row(user_row),
        account=None if account_row[0] is None else account_from_row(account_row),
        member=bool(values[_MEMBER_AT]),
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
        utc(credential.created_at),
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
        created_at=row[7],
    )


def entry_from_row(row: Row) -> AuditEntry:
    """An audit row (seq, hash, body) as read; tampered bytes reach the verifier as data."""
    return AuditEntry(seq=int(row[0]), hash=bytes(row[1]), body=bytes(row[2]))
