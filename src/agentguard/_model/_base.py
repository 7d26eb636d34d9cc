"""Shared configuration for the stored records."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints

from agentguard._clock import utc

__all__ = ["Identifier", "Record", "UTCDateTime"]

Identifier = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$", strict=True)
]
"""An id: 1-128 characters of letters, digits and ``. _ : @ -``, starting alphanumeric."""

UTCDateTime = Annotated[datetime, AfterValidator(utc)]
"""A timezone-aware datetime, normalised to UTC; naive datetimes are refused."""


class Record(BaseModel):
    """Base of every stored record: immutable, unknown fields refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")
