"""Records to SQL parameters and rows back to records, shared by the SQL backends.

Both backends use the same column order (the statements in their ``_queries`` modules follow
it); they differ only in how a point in time travels: SQLite stores integer microseconds since
the epoch, PostgreSQL stores ``timestamptz``. A :class:`RowCodec` is built with the two time
functions and provides every conversion. Grants travel as compact JSON text.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from agentguard._model import (
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
from agentguard.audit._chain import AuditEntry
from agentguard.audit._rows import blob
from agentguard.audit._rows import entry_from_row as _entry_from_row
from agentguard.errors import CorruptRecord
from agentguard.storage._protocols import KeyLookup

__all__ = ["Params", "Row", "RowCodec", "blob"]

Row = Sequence[Any]
Params = tuple[Any, ...]

_USER_AT = 15  # a key lookup selects 15 key columns, 5 user, 3 account, then the member flag
_ACCOUNT_AT = _USER_AT + 5
_MEMBER_AT = _ACCOUNT_AT + 3


def _grants_json(grants: Grants) -> str:
    return json.dumps(grants.to_dict(), sort_keys=True, separators=(",", ":"))


def _grants(text: str) -> Grants:
    return Grants(json.loads(text))


class RowCodec:
    """Every record conversion, for one way of storing time.

    Args:
        encode_time: an aware datetime to its column value (naive datetimes must raise).
        decode_time: a column value back to an aware UTC datetime.
        encode_bool: a bool to its column value (SQLite stores integers).
    """

    def __init__(
        self,
        encode_time: Callable[[datetime], Any],
        decode_time: Callable[[Any], datetime],
        *,
        encode_bool: Callable[[bool], Any] = bool,
    ) -> None:
        self._encode_time = encode_time
        self._decode_time = decode_time
        self._encode_bool = encode_bool

    def _optional_encode(self, moment: datetime | None) -> Any:
        return None if moment is None else self._encode_time(moment)

    def _optional_decode(self, value: Any) -> datetime | None:
        return None if value is None else self._decode_time(value)

    def account_params(self, account: Account) -> Params:
        return (account.id, account.name, account.status.value)

    def account_from_row(self, row: Row) -> Account:
        return Account(id=row[0], name=row[1], status=AccountStatus(row[2]))

    def workspace_params(self, workspace: Workspace) -> Params:
        return (workspace.id, workspace.account_id, workspace.name)

    def workspace_from_row(self, row: Row) -> Workspace:
        return Workspace(id=row[0], account_id=row[1], name=row[2])

    def user_params(self, user: User) -> Params:
        return (
            user.id,
            user.account_id,
            user.name,
            self._encode_bool(user.enabled),
            _grants_json(user.grants),
        )

    def user_from_row(self, row: Row) -> User:
        return User(
            id=row[0], account_id=row[1], name=row[2], enabled=bool(row[3]), grants=_grants(row[4])
        )

    def key_params(self, record: KeyRecord) -> Params:
        return (
            record.id,
            record.kind.value,
            record.key_hash,
            record.family_id,
            record.user_id,
            record.workspace_id,
            record.account_id,
            self._encode_time(record.created_at),
            self._encode_time(record.expires_at),
            self._optional_encode(record.revoked_at),
            record.revoked_reason,
            self._optional_encode(record.used_at),
            None if record.scope is None else _grants_json(record.scope),
            record.jkt,
            record.audience,
        )

    def key_from_row(self, row: Row) -> KeyRecord:
        return KeyRecord(
            id=row[0],
            kind=KeyKind(row[1]),
            key_hash=bytes(row[2]),
            family_id=row[3],
            user_id=row[4],
            workspace_id=row[5],
            account_id=row[6],
            created_at=self._decode_time(row[7]),
            expires_at=self._decode_time(row[8]),
            revoked_at=self._optional_decode(row[9]),
            revoked_reason=row[10],
            used_at=self._optional_decode(row[11]),
            scope=None if row[12] is None else _grants(row[12]),
            jkt=row[13],
            audience=row[14],
        )

    def lookup_from_row(self, row: Row) -> KeyLookup:
        """Decode key columns, user columns, account columns and a member flag."""
        values = tuple(row)
        user_row = values[_USER_AT:_ACCOUNT_AT]
        account_row = values[_ACCOUNT_AT:_MEMBER_AT]
        return KeyLookup(
            key=self.key_from_row(values[:_USER_AT]),
            user=None if user_row[0] is None else self.user_from_row(user_row),
            account=None if account_row[0] is None else self.account_from_row(account_row),
            member=bool(values[_MEMBER_AT]),
        )

    def credential_params(self, credential: StoredCredential) -> Params:
        return (
            credential.service,
            credential.owner_kind.value,
            credential.owner_id,
            credential.id,
            credential.scope.value,
            credential.ciphertext,
            credential.key_id,
            self._encode_time(credential.created_at),
        )

    def credential_from_row(self, row: Row) -> StoredCredential:
        """The credential of ``row``; :class:`CorruptRecord` when a column does not parse."""
        try:
            return StoredCredential(
                service=row[0],
                owner_kind=CredentialOwner(row[1]),
                owner_id=row[2],
                id=row[3],
                scope=CredentialScope(row[4]),
                ciphertext=bytes(row[5]),
                key_id=row[6],
                created_at=self._decode_time(row[7]),
            )
        except (ValueError, TypeError, OverflowError, OSError) as error:  # incl. pydantic's
            raise CorruptRecord(
                "a stored credential does not parse: it was edited outside agentguard"
            ) from error

    @staticmethod
    def entry_from_row(row: Row) -> AuditEntry:
        """An audit row ``(seq, hash, body)`` as read; tampered types reach the verifier as data."""
        return _entry_from_row(row)
