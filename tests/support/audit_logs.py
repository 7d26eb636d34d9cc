"""What the audit verifier's tests share: generated events and a store read through ``read()``."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import strategies as st

from agentguard.audit import Action, AuditEntry, AuditEvent, Decision
from agentguard.audit._prefix import ArchivedPrefix
from agentguard.audit._verify import LogVerifier

EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)


@st.composite
def events(draw: st.DrawFn, texts: st.SearchStrategy[str]) -> AuditEvent:
    """An event of any action and decision, its strings drawn from ``texts``, with a ``detail``
    that is empty or holds a few scalars (some under the names ``prev`` and ``seq``)."""
    scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**53) + 1, 2**53 - 1), texts)
    detail = draw(
        st.one_of(
            st.just({}),
            st.dictionaries(st.sampled_from(["a", "b", "z_1", "prev", "seq"]), scalars, max_size=3),
        )
    )
    return AuditEvent(
        action=draw(st.sampled_from(list(Action))),
        ts=EPOCH + timedelta(microseconds=draw(st.integers(0, 10**9))),
        decision=draw(st.sampled_from([None, Decision.ALLOW, Decision.DENY])),
        user_id=draw(st.one_of(st.none(), texts)),
        path=draw(st.one_of(st.none(), texts)),
        reason=draw(st.one_of(st.none(), texts)),
        status=draw(st.one_of(st.none(), st.integers(100, 599))),
        latency_us=draw(st.one_of(st.none(), st.integers(0, 2**53 - 1))),
        detail=detail,
    )


class EntriesOnly:
    """A store seen through ``read()`` and ``head()`` only (no ``read_rows``): what
    ``verify_store`` reads from a store without the row capability."""

    def __init__(self, store: Any) -> None:
        self._store = store

    async def read(self, start: int = 0, stop: int | None = None) -> list[AuditEntry]:
        entries: list[AuditEntry] = await self._store.read(start, stop)
        return entries

    async def head(self) -> AuditEntry | None:
        entry: AuditEntry | None = await self._store.head()
        return entry

    async def append(self, events: Any) -> list[AuditEntry]:
        raise NotImplementedError("read-only")

    async def archived_prefix(self) -> ArchivedPrefix | None:
        finder = getattr(self._store, "archived_prefix", None)
        prefix: ArchivedPrefix | None = None if finder is None else await finder()
        return prefix


def count_taken_pages(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """From now on, the start of each page a verifier takes from a worker's result
    (``LogVerifier.take_page`` returning ``True``), in the list returned: proof that a
    ``jobs > 1`` verification used its workers rather than only its fallback."""
    taken: list[int] = []
    original = LogVerifier.take_page

    def counted(self: LogVerifier, page: Any) -> bool:
        took = original(self, page)
        if took:
            taken.append(page.start)
        return took

    monkeypatch.setattr(LogVerifier, "take_page", counted)
    return taken
