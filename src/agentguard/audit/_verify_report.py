"""What :func:`~agentguard.audit.verify_log` reports: categories, findings, the report, and the
witness summary of the newest checkpoint (kept apart from the walk itself, which is long)."""

from __future__ import annotations

import enum
from binascii import b2a_base64
from collections.abc import Sequence
from dataclasses import dataclass

from agentguard.audit._cosignatures import (
    WitnessKey,
    WitnessTally,
    check_distinct,
    count_cosignatures,
)
from agentguard.errors import UsageError

__all__ = ["Category", "Finding", "VerifyReport", "b64", "witness_summary"]


class Category(str, enum.Enum):
    """What kind of damage a finding describes."""

    MODIFIED = "MODIFIED"
    MISSING = "MISSING"
    INSERTED = "INSERTED"
    REORDERED = "REORDERED"
    NON_CANONICAL = "NON-CANONICAL"
    TRUNCATED = "TRUNCATED-BELOW-CHECKPOINT"
    FORK = "FORK/ROLLBACK"
    BAD_SIGNATURE = "BAD-SIGNATURE"
    UNANCHORED_TAIL = "UNANCHORED-TAIL"
    ARCHIVED_UNCHECKED = "ARCHIVED-UNCHECKED"
    UNWITNESSED = "UNWITNESSED"


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem: its category, the first seq it concerns (``None`` if none), and why."""

    category: Category
    seq: int | None
    detail: str

    @property
    def warning(self) -> bool:
        """True for findings that do not make the log fail (the unanchored tail, and a
        checkpoint inside an archived prefix that only the archive can check)."""
        return self.category in (Category.UNANCHORED_TAIL, Category.ARCHIVED_UNCHECKED)

    def line(self) -> str:
        """A one-line rendering: ``FAIL seq=41233 MODIFIED stored=9f1c… recomputed=03ab…``."""
        where = "" if self.seq is None else f" seq={self.seq}"
        return f"{'WARN' if self.warning else 'FAIL'}{where} {self.category.value} {self.detail}"


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """The outcome of :func:`verify_log`.

    Attributes:
        ok: no failing finding (an unanchored tail alone leaves it True).
        size: entries read; ``root`` is the Merkle root over them.
        findings: every finding, ordered by seq (seq-less ones last).
        first: the first failing finding, ``None`` when ``ok``.
        anchored: a trusted checkpoint covers exactly the whole log.
        anchored_size: the size of the largest checkpoint that matched the log.
        witness: when witnesses were required: the newest checkpoint's size, the quorum, and
            the witnesses whose cosignatures on it verified (``None`` otherwise).
    """

    ok: bool
    size: int
    root: bytes
    findings: list[Finding]
    first: Finding | None
    anchored: bool
    anchored_size: int
    witness: dict[str, object] | None = None

    def to_dict(self) -> dict[str, object]:
        """A JSON-serialisable form (``agentguard audit verify --json``)."""
        return {
            "ok": self.ok,
            "size": self.size,
            "root": b64(self.root),
            "anchored": self.anchored,
            "anchored_size": self.anchored_size,
            "first": None if self.first is None else _finding_dict(self.first),
            "findings": [_finding_dict(f) for f in self.findings],
            "witness": self.witness,
        }


def _finding_dict(finding: Finding) -> dict[str, object]:
    return {"category": finding.category.value, "seq": finding.seq, "detail": finding.detail}


def b64(digest: bytes) -> str:
    return b2a_base64(digest, newline=False).decode("ascii")


def witness_summary(
    notes: dict[int, list[str]], trusted: dict[int, bytes], witnesses: Sequence[str], quorum: int
) -> tuple[dict[str, object], list[Finding]]:
    """The witness summary of the newest checkpoint and its findings (none if it is met).

    Raises :class:`~agentguard.errors.UsageError` for a quorum below 1 (it would check
    nothing) or above the witnesses given, and for two witnesses with one name or one key.
    """
    keys = [WitnessKey.from_vkey(v) for v in witnesses]
    check_distinct(keys)
    if not 1 <= quorum <= len(keys):
        raise UsageError(
            f"a witness quorum is from 1 to the {len(keys)} witness key(s) given, not {quorum}"
        )
    newest = max(trusted, default=None)
    tally = WitnessTally()
    found: list[Finding] = []
    if newest is not None:
        tally = count_cosignatures(notes.get(newest, []), keys)
    summary: dict[str, object] = {
        "size": newest,
        "quorum": quorum,
        "given": len(keys),
        "cosigned_by": list(tally.valid),
        "invalid": list(tally.invalid),
        "ok": newest is not None and tally.meets(quorum),
    }
    for name in tally.invalid:
        detail = f"a cosignature by witness {name} on the checkpoint of size {newest} is invalid"
        found.append(Finding(Category.BAD_SIGNATURE, None, detail))
    if newest is None:
        detail = f"no signed checkpoint to check for {quorum} witness cosignature(s)"
        found.append(Finding(Category.UNWITNESSED, None, detail))
    elif tally.count() < quorum:
        detail = (
            f"the newest checkpoint (size {newest}) carries {tally.count()} valid cosignature(s) "
            f"from the {len(keys)} given witness(es); {quorum} required"
        )
        found.append(Finding(Category.UNWITNESSED, None, detail))
    return summary, found
