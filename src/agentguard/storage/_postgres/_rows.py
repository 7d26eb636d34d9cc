"""PostgreSQL's row codec: times travel as aware datetimes (``timestamptz``, exact to the
microsecond, read back in UTC); grants as JSON text PostgreSQL stores as ``jsonb``.

The conversions themselves are the shared :class:`~agentguard.storage._rows.RowCodec`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from agentguard._clock import utc
from agentguard._model import KeyRecord
from agentguard.storage._rows import Params, Row, RowCodec

__all__ = [
    "Params",
    "Row",
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


def _read_time(value: datetime) -> datetime:
    return utc(value)


_CODEC = RowCodec(utc, _read_time)
account_params = _CODEC.account_params
account_from_row = _CODEC.account_from_row
workspace_params = _CODEC.workspace_params
workspace_from_row = _CODEC.workspace_from_row
user_params = _CODEC.user_params
user_from_row = _CODEC.user_from_row
key_from_row = _CODEC.key_from_row
lookup_from_row = _CODEC.lookup_from_row
credential_params = _CODEC.credential_params
credential_from_row = _CODEC.credential_from_row
entry_from_row = _CODEC.entry_from_row


def key_columns(records: Sequence[KeyRecord]) -> Params:
    """The 15 key columns of ``records`` as 15 arrays, for one ``unnest`` insert."""
    columns: list[list[Any]] = [[] for _ in range(15)]
    for record in records:
        for column, value in zip(columns, _CODEC.key_params(record), strict=True):
            column.append(value)
    return tuple(columns)
