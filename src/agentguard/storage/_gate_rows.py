"""Approval and operator records to SQL parameters and back, shared by the SQL backends.

Like :class:`~agentguard.storage._rows.RowCodec`: both backends use one column order (the
record's field order) and differ only in how a point in time travels, so a :class:`GateCodec`
is built with the backend's two time functions. A row that no longer parses (edited outside
agentguard) raises :class:`~agentguard.errors.CorruptRecord`, refused like an outage.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from agentguard._model import ApprovalRecord, ApprovalStatus, OperatorRecord
from agentguard.errors import CorruptRecord
from agentguard.storage._rows import Params, Row, blob

__all__ = ["APPROVAL_COLUMNS", "OPERATOR_COLUMNS", "GateCodec"]

APPROVAL_COLUMNS = """id, status, binding, family_id, key_id, user_id, workspace_id, account_id,
    service, scope, method, path, query, body_digest, body_bytes, body_preview, rule_version,
    created_at, expires_at, decided_at, decided_by, consumed_at, headers"""
"""The 23 approval columns, in the order of :meth:`GateCodec.approval_params`."""

OPERATOR_COLUMNS = "id, name, token_hash, created_at, expires_at, revoked_at"
"""The 6 operator columns, in the order of :meth:`GateCodec.operator_params`."""

_PARSE_ERRORS = (ValueError, TypeError, OverflowError, OSError, IndexError)  # incl. pydantic's


class GateCodec:
    """Approval and operator conversions, for one way of storing time.

    Args:
        encode_time: an aware datetime to its column value (naive datetimes must raise).
        decode_time: a column value back to an aware UTC datetime.
    """

    def __init__(
        self, encode_time: Callable[[datetime], Any], decode_time: Callable[[Any], datetime]
    ) -> None:
        self._encode_time = encode_time
        self._decode_time = decode_time

    def _optional_encode(self, moment: datetime | None) -> Any:
        return None if moment is None else self._encode_time(moment)

    def _optional_decode(self, value: Any) -> datetime | None:
        return None if value is None else self._decode_time(value)

    def approval_params(self, record: ApprovalRecord) -> Params:
        """The 23 columns of ``record``, in :data:`APPROVAL_COLUMNS` order."""
        return (
            record.id,
            record.status.value,
            record.binding,
            record.family_id,
            record.key_id,
            record.user_id,
            record.workspace_id,
            record.account_id,
            record.service,
            record.scope,
            record.method,
            record.path,
            record.query,
            record.body_digest,
            record.body_bytes,
            record.body_preview,
            record.rule_version,
            self._encode_time(record.created_at),
            self._encode_time(record.expires_at),
            self._optional_encode(record.decided_at),
            record.decided_by,
            self._optional_encode(record.consumed_at),
            record.headers,
        )

    def approval_from_row(self, row: Row) -> ApprovalRecord:
        """The approval of ``row``; :class:`CorruptRecord` when a column does not parse."""
        try:
            return ApprovalRecord(
                id=row[0],
                status=ApprovalStatus(row[1]),
                binding=row[2],
                family_id=row[3],
                key_id=row[4],
                user_id=row[5],
                workspace_id=row[6],
                account_id=row[7],
                service=row[8],
                scope=row[9],
                method=row[10],
                path=row[11],
                query=row[12],
                body_digest=row[13],
                body_bytes=row[14],
                body_preview=row[15],
                rule_version=row[16],
                created_at=self._decode_time(row[17]),
                expires_at=self._decode_time(row[18]),
                decided_at=self._optional_decode(row[19]),
                decided_by=row[20],
                consumed_at=self._optional_decode(row[21]),
                headers=row[22],
            )
        except _PARSE_ERRORS as error:
            raise CorruptRecord(
                "a stored approval does not parse: it was edited outside agentguard"
            ) from error

    def operator_params(self, record: OperatorRecord) -> Params:
        """The 6 columns of ``record``, in :data:`OPERATOR_COLUMNS` order."""
        return (
            record.id,
            record.name,
            record.token_hash,
            self._encode_time(record.created_at),
            self._optional_encode(record.expires_at),
            self._optional_encode(record.revoked_at),
        )

    def operator_from_row(self, row: Row) -> OperatorRecord:
        """The operator of ``row``; :class:`CorruptRecord` when a column does not parse."""
        try:
            return OperatorRecord(
                id=row[0],
                name=row[1],
                token_hash=blob(row[2]),
                created_at=self._decode_time(row[3]),
                expires_at=self._optional_decode(row[4]),
                revoked_at=self._optional_decode(row[5]),
            )
        except _PARSE_ERRORS as error:
            raise CorruptRecord(
                "a stored operator token record does not parse: it was edited outside agentguard"
            ) from error
