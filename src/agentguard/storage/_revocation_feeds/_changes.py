"""What a revocation event says, and the protocol of the feeds that deliver them.

A :class:`Change` names the ids whose streams must be re-checked now (``user_id="u1"``:
every open stream of user ``u1``). A change that names nothing, or a payload that does not
parse, means "something changed": every open stream is re-checked. An event is only ever a
reason to look again; the store decides, so a forged or garbled event can cost a look-up,
never keep a stream alive or end one that is still valid.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from agentguard._stream_lease import StreamLease

__all__ = ["FIELDS", "Change", "RevocationFeed", "encode_change", "parse_change"]

FIELDS: tuple[str, ...] = ("key_id", "family_id", "user_id", "workspace_id", "account_id")
"""The ids a change may name (the ids a stream's lease carries)."""

_MAX_ID = 256
_MAX_PAYLOAD = 8000  # PostgreSQL's NOTIFY limit; anything longer is not ours


class Change:
    """The ids one event names; :attr:`everything` when it names none (or none readable)."""

    __slots__ = ("ids",)

    def __init__(self, ids: tuple[tuple[str, str], ...] = ()) -> None:
        self.ids = ids

    @property
    def everything(self) -> bool:
        """Whether every open stream must be re-checked."""
        return not self.ids

    def matches(self, lease: StreamLease) -> bool:
        """Whether ``lease`` is one of the streams this change may end."""
        if not self.ids:
            return True
        return any(getattr(lease, field) == value for field, value in self.ids)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Change) and other.ids == self.ids

    def __hash__(self) -> int:
        return hash(self.ids)

    def __repr__(self) -> str:
        if not self.ids:
            return "Change(everything)"
        return "Change(" + ", ".join(f"{field}={value!r}" for field, value in self.ids) + ")"


EVERYTHING = Change()


def parse_change(payload: str | bytes | bytearray | None) -> Change:
    """The change a feed's payload names; :data:`EVERYTHING` for anything unreadable.

    A payload is a JSON object naming one or more of :data:`FIELDS` with string values, such
    as ``{"table": "users", "user_id": "u1"}``; other members are ignored. Never raises.
    """
    if payload is None or len(payload) > _MAX_PAYLOAD:
        return EVERYTHING
    try:
        document = json.loads(payload)
    except (ValueError, RecursionError):
        return EVERYTHING
    if not isinstance(document, dict):
        return EVERYTHING
    ids: list[tuple[str, str]] = []
    for field in FIELDS:
        value = document.get(field)
        if value is None:
            continue
        if not isinstance(value, str) or not value or len(value) > _MAX_ID:
            return EVERYTHING  # a named id we cannot read: look at every stream
        ids.append((field, value))
    return Change(tuple(ids))


def encode_change(**ids: str | None) -> str:
    """The payload for a change naming ``ids`` (``None`` values left out), e.g.
    ``encode_change(user_id="u1")``."""
    unknown = set(ids) - set(FIELDS)
    if unknown:
        raise ValueError(f"a change names only {', '.join(FIELDS)}")
    named = {field: value for field, value in ids.items() if value is not None}
    return json.dumps(named, separators=(",", ":"), sort_keys=True)


@runtime_checkable
class RevocationFeed(Protocol):
    """A source of revocation events for the live-stream registry.

    :meth:`watch` connects, calls ``ready()`` once it receives events (and again after every
    reconnect it makes itself: events in between may be lost, so the registry re-checks every
    open stream), then calls ``changed(change)`` for each event, and runs until cancelled. It
    raises when the source is lost; the registry logs it, falls back to its interval, and calls
    :meth:`watch` again after a backoff. Callbacks are cheap and never raise.
    """

    async def watch(self, changed: Callable[[Change], None], ready: Callable[[], None]) -> None:
        """Deliver events until cancelled; raise when the source is lost."""
        ...
