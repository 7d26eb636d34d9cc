"""Connected accounts and connect flows to SQL parameters and back, shared by the SQL backends.

Like :class:`~agentguard.storage._gate_rows.GateCodec`: one column order for both backends (the
record's field order), built with the backend's two time functions. Ciphertexts and hashes
travel as ``bytes`` (``BLOB`` / ``bytea``); scopes as a JSON array in a text column (ASCII
escapes, so any string survives both databases). A row that no longer parses raises
:class:`~agentguard.errors.CorruptRecord`, refused like an outage.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from agentguard._model import ConnectedAccount, ConnectFlow, ConnectionStatus, FlowKind
from agentguard.errors import CorruptRecord, UsageError
from agentguard.storage._rows import Params, Row, blob

__all__ = ["CONNECTION_COLUMNS", "FLOW_COLUMNS", "ConnectionCodec", "check_next_version"]

CONNECTION_COLUMNS = """id, service, user_id, status, access_token, refresh_token, expires_at,
    scopes, key_id, created_at, updated_at, version"""
"""The 12 connection columns, in the order of :meth:`ConnectionCodec.connection_params`."""

FLOW_COLUMNS = """id, kind, token_hash, service, user_id, created_at, expires_at, browser_hash,
    verifier, created_by"""
"""The 10 connect-flow columns, in the order of :meth:`ConnectionCodec.flow_params`."""

_PARSE_ERRORS = (ValueError, TypeError, OverflowError, OSError, IndexError)  # incl. pydantic's


def check_next_version(record: ConnectedAccount, version: int) -> None:
    """Refuse an update whose ``record.version`` is not ``version + 1`` (before any change)."""
    if record.version != version + 1:
        raise UsageError(
            f"an updated connection's version must be version + 1 = {version + 1}, "
            f"not {record.version}"
        )


def _scopes_json(scopes: tuple[str, ...]) -> str:
    return json.dumps(list(scopes), separators=(",", ":"))


def _scopes(text: str) -> tuple[str, ...]:
    values = json.loads(text)
    if not isinstance(values, list):
        raise TypeError("scopes are not a JSON array")
    return tuple(values)


def _optional_blob(value: object) -> bytes | None:
    return None if value is None else blob(value)


class ConnectionCodec:
    """Connection and connect-flow conversions, for one way of storing time.

    Args:
        encode_time: an aware datetime to its column value (naive datetimes must raise).
        decode_time: a column value back to an aware UTC datetime.
    """

    def __init__(
        self, encode_time: Callable[[datetime], Any], decode_time: Callable[[Any], datetime]
    ) -> None:
        self._encode_time = encode_time
        self._decode_time = decode_time

    def connection_params(self, record: ConnectedAccount) -> Params:
        """The 12 columns of ``record``, in :data:`CONNECTION_COLUMNS` order."""
        return (
            record.id,
            record.service,
            record.user_id,
            record.status.value,
            bytes(record.access_token),
            None if record.refresh_token is None else bytes(record.refresh_token),
            None if record.expires_at is None else self._encode_time(record.expires_at),
            _scopes_json(record.scopes),
            record.key_id,
            self._encode_time(record.created_at),
            self._encode_time(record.updated_at),
            record.version,
        )

    def connection_from_row(self, row: Row) -> ConnectedAccount:
        """The connection of ``row``; :class:`CorruptRecord` when a column does not parse."""
        try:
            return ConnectedAccount(
                id=row[0],
                service=row[1],
                user_id=row[2],
                status=ConnectionStatus(row[3]),
                access_token=blob(row[4]),
                refresh_token=_optional_blob(row[5]),
                expires_at=None if row[6] is None else self._decode_time(row[6]),
                scopes=_scopes(row[7]),
                key_id=row[8],
                created_at=self._decode_time(row[9]),
                updated_at=self._decode_time(row[10]),
                version=row[11],
            )
        except _PARSE_ERRORS as error:
            raise CorruptRecord(
                "a stored connected account does not parse: it was edited outside agentguard"
            ) from error

    def flow_params(self, record: ConnectFlow) -> Params:
        """The 10 columns of ``record``, in :data:`FLOW_COLUMNS` order."""
        return (
            record.id,
            record.kind.value,
            bytes(record.token_hash),
            record.service,
            record.user_id,
            self._encode_time(record.created_at),
            self._encode_time(record.expires_at),
            None if record.browser_hash is None else bytes(record.browser_hash),
            None if record.verifier is None else bytes(record.verifier),
            record.created_by,
        )

    def flow_from_row(self, row: Row) -> ConnectFlow:
        """The connect flow of ``row``; :class:`CorruptRecord` when a column does not parse."""
        try:
            return ConnectFlow(
                id=row[0],
                kind=FlowKind(row[1]),
                token_hash=blob(row[2]),
                service=row[3],
                user_id=row[4],
                created_at=self._decode_time(row[5]),
                expires_at=self._decode_time(row[6]),
                browser_hash=_optional_blob(row[7]),
                verifier=_optional_blob(row[8]),
                created_by=row[9],
            )
        except _PARSE_ERRORS as error:
            raise CorruptRecord(
                "a stored connect flow does not parse: it was edited outside agentguard"
            ) from error
