"""Shared by the tlog-proof tests: a sealed log of real events, checkpoints on it, proofs."""

from __future__ import annotations

from datetime import datetime, timezone
from functools import lru_cache

from agentguard.audit import (
    Action,
    AuditEntry,
    AuditEvent,
    Checkpoint,
    Ed25519Signer,
    prove_entry,
    sign_checkpoint,
    tlog_proof,
)
from agentguard.audit._chain import GENESIS_PREV, seal
from agentguard.audit._merkle import root

__all__ = ["ORIGIN", "SIGNER", "STRANGER", "log", "proof_text"]

ORIGIN = "audit.example.com/agentguard/test"
SIGNER = Ed25519Signer.generate(ORIGIN)
STRANGER = Ed25519Signer.generate(ORIGIN)  # same name, another key: must never be trusted
_WHEN = datetime(2026, 1, 1, tzinfo=timezone.utc)


@lru_cache(maxsize=1)
def _log(n: int) -> tuple[AuditEntry, ...]:
    entries: list[AuditEntry] = []
    for i in range(n):
        event = AuditEvent(Action.KEY_ISSUE, _WHEN, key_id=f"k{i}")
        entries.append(seal(event, i, entries[-1].hash if entries else GENESIS_PREV))
    return tuple(entries)


def log(n: int) -> list[AuditEntry]:
    """The first ``n`` entries of one cached log (at most 2100)."""
    return list(_log(2100)[:n])


@lru_cache(maxsize=4096)
def note(size: int, signer: Ed25519Signer = SIGNER) -> str:
    """The checkpoint of the log at ``size``, signed by ``signer``."""
    leaves = [e.hash for e in log(size)]
    return sign_checkpoint(Checkpoint(ORIGIN, size, root(leaves)), [signer])


def proof_text(index: int, size: int, signer: Ed25519Signer = SIGNER) -> str:
    """The tlog-proof of entry ``index`` under the checkpoint at ``size``."""
    return tlog_proof(prove_entry(log(size), index, note(size, signer)))
