"""Shared helpers for the tile tests: logs of N events, signed checkpoints, the tiles' oracle."""

from __future__ import annotations

from agentguard.audit import Action, AuditEvent
from agentguard.testing import FakeClock

ORIGIN = "audit.example.test/agentguard/tiles"


def events(count: int, tag: str = "e") -> list[AuditEvent]:
    """``count`` small decision events (distinct paths)."""
    now = FakeClock().now()
    return [AuditEvent(action=Action.DECISION, ts=now, path=f"/{tag}/{n}") for n in range(count)]


async def fill(store: object, count: int, tag: str = "e", batch: int = 512) -> None:
    """Append ``count`` events to ``store`` in batches."""
    made = events(count, tag)
    for start in range(0, count, batch):
        await store.append(made[start : start + batch])  # type: ignore[attr-defined]
