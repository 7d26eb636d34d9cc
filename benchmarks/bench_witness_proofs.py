"""Consistency proofs for witnesses: a full re-read per proof against cached chunk roots.

Run: ``python benchmarks/bench_witness_proofs.py [--events 300000]``.

Builds a SQLite log of ``--events`` events, then, in one run, times the proof a witness needs
after 3 more events (``old = events``, ``new = events + 3``):

- baseline: every subtree of the proof re-derived from event bodies (what the witness pool did
  before: about the whole log read per proof, per witness);
- :class:`~agentguard.audit._witness_proofs.LogProofs`, cold (its first proof: fills the roots
  of every full 256-event chunk once) and warm (the next checkpoint's proof, 3 events later:
  a few dictionary lookups and the new edge read).

Figures are milliseconds per proof with the ratio to the baseline of the same run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import anyio

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

from report import Row, record  # noqa: E402

from agentguard.audit import Action, AuditEvent, leaf_hash  # noqa: E402
from agentguard.audit._merkle import CompactRange, consistency_path  # noqa: E402
from agentguard.audit._witness_proofs import LogProofs  # noqa: E402
from agentguard.storage import SQLiteStore  # noqa: E402
from agentguard.testing import FakeClock  # noqa: E402


async def build(store: SQLiteStore, start: int, count: int) -> None:
    now = FakeClock().now()
    for first in range(start, start + count, 4096):
        await store.append(
            [
                AuditEvent(action=Action.DECISION, ts=now, path=f"/repos/acme/issues/{n}")
                for n in range(first, min(start + count, first + 4096))
            ]
        )


async def from_bodies(store: SQLiteStore, old: int, new: int) -> list[bytes]:
    """The former proof: each subtree it names rebuilt from bodies read from the store."""
    wanted: list[tuple[int, int]] = []

    def record_span(lo: int, hi: int) -> bytes:
        wanted.append((lo, hi))
        return bytes(32)

    consistency_path(record_span, old, new)
    known: dict[tuple[int, int], bytes] = {}
    for lo, hi in sorted(set(wanted)):
        compact, position = CompactRange(), lo
        while position < hi:
            entries = await store.read(position, min(hi, position + 4096))
            compact.extend(leaf_hash(entry.body) for entry in entries)
            position += len(entries)
        known[(lo, hi)] = compact.root()
    return consistency_path(lambda lo, hi: known[(lo, hi)], old, new)


async def timed(work: object) -> tuple[float, object]:
    started = time.perf_counter()
    result = await work  # type: ignore[misc]
    return (time.perf_counter() - started) * 1000, result


async def main(events: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        async with SQLiteStore(Path(directory) / "log.db") as store:
            await build(store, 0, events + 3)
            base_ms, expected = await timed(from_bodies(store, events, events + 3))
            proofs = LogProofs(store)
            cold_ms, cold = await timed(proofs.proof(events, events + 3))
            assert cold == expected
            await build(store, events + 3, 3)
            reads = proofs.reads
            warm_ms, warm = await timed(proofs.proof(events + 3, events + 6))
            assert warm == await from_bodies(store, events + 3, events + 6)
            warm_reads = proofs.reads - reads
    rows = [
        Row("witness", "proof, cold cache", cold_ms, "ms", "re-read from bodies", base_ms, True),
        Row("witness", "proof, warm cache", warm_ms, "ms", "re-read from bodies", base_ms, True),
    ]
    print(f"log of {events:,} events; warm proof read {warm_reads} entries")
    for row in rows:
        print(
            f"{row.name:24} {row.value:10.2f} {row.unit}  "
            f"({row.ratio:8.4f}x {row.baseline}: {row.baseline_value:,.1f} ms)"
        )
    record(rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=300_000)
    anyio.run(main, parser.parse_args().events)
