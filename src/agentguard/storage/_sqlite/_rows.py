"""SQLite's row codec: times as integer microseconds since the epoch in UTC.

Every stored instant reads back equal to the one written; the conversions themselves are the
shared :class:`~agentguard.storage._rows.RowCodec`.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from agentguard._clock import utc
from agentguard.storage._rows import Params, Row, RowCodec

__all__ = [
    "Params",
    "Row",
    "account_from_row",
    "account_params",
    "credential_from_row",
    "credential_params",
    "entry_from_row",
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

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


def micros(moment: datetime) -> int:
    """``moment`` as whole microseconds since the epoch; naive datetimes raise ``ValueError``."""
    return (utc(moment) - _EPOCH) // _MICROSECOND


def from_micros(value: int) -> datetime:
    """The aware UTC datetime stored as ``value`` microseconds since the epoch."""
    return _EPOCH + timedelta(microseconds=value)


_CODEC = RowCodec(micros, from_micros, encode_bool=int)
account_params = _CODEC.account_params
account_from_row = _CODEC.account_from_row
workspace_params = _CODEC.workspace_params
workspace_from_row = _CODEC.workspace_from_row
user_params = _CODEC.user_params
user_from_row = _CODEC.user_from_row
key_params = _CODEC.key_params
key_from_row = _CODEC.key_from_row
lookup_from_row = _CODEC.lookup_from_row
credential_params = _CODEC.credential_params
credential_from_row = _CODEC.credential_from_row
entry_from_row = _CODEC.entry_from_row
