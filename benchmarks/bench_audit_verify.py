"""``agentguard audit verify`` on SQLite: the streaming verifier against the whole-log baseline.

Run: ``python benchmarks/bench_audit_verify.py [--large] [--sizes 100000,1000000]``.

For each size it builds a SQLite log with one signed checkpoint at its end, then verifies it in
a fresh process per measurement (so peak RSS is that verification's own):

- ``stream``: :func:`agentguard.audit._verify_store.verify_store` in one process (pages of
  8192 seqs read as the stored rows, checked 256 at a time: template schema check, hashes of
  the stored bytes);
- ``jobs 2``: the same with two worker processes computing the pages ahead (what
  ``agentguard audit verify`` runs by default on a 2-CPU machine for a log of 200,000 events
  or more); its CPU figure adds the workers' CPU, its peak RSS is the largest process's;
- ``whole``: the baseline the CLI ran before, ``await store.read()`` and then the whole-log
  verifier kept in ``tests/support/verify_oracle.py`` (the old path; skipped with ``--large``,
  where it would need ~7 GiB).

It prints events/s by CPU time (``resource.getrusage``: the figure to compare on a loaded
machine) and by wall time, peak RSS, and the wall-time ratio to the baseline measured in the
same run.
Targets (issue 17): >= 300k events/s and <= 100 MiB peak RSS at 10M events (``--large``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from binascii import b2a_base64
from datetime import datetime, timedelta, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)
ORIGIN = "bench.example/audit-verify"
TARGET_RATE = 300_000
TARGET_RSS_MIB = 100


def _body(seq: int, prev: bytes) -> bytes:
    """``seal(decision(seq), seq, prev).body`` by formatting (checked against it in ``_build``)."""
    deny = not seq % 10
    ts = (EPOCH + timedelta(microseconds=seq)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return (
        b'{"action":"guard.decision","actor":{"account":"acc_01HZX3ACME","family":null,'
        b'"key_id":"key_01HZX%06d","user":"usr_01HZX%04d","workspace":"ws_01HZX3ACME"},'
        b'"decision":"%s","detail":{},"instance":"api-1","latency_us":%d,"method":"GET",'
        b'"path":"/repos/acme/widgets/issues/%d","prev":"%s","reason":%s,'
        b'"request_id":"req_01HZX3%010d","seq":%d,"service":"github","status":%d,'
        b'"ts":"%s","v":1}'
    ) % (
        seq % 389, seq % 97, b"deny" if deny else b"allow", 800 + seq % 500, seq,
        b2a_base64(prev, newline=False), b'"insufficient_scope"' if deny else b"null",
        seq, seq, 403 if deny else 200, ts.encode(),
    )  # fmt: skip


def _build(path: Path, n: int) -> tuple[str, str]:
    """A SQLite log of ``n`` typical events and a note signed at ``n``; returns (note, vkey)."""
    import sqlite3

    import anyio
    from bench_audit import decision

    from agentguard.audit import Checkpoint, Ed25519Signer, leaf_hash, sign_checkpoint
    from agentguard.audit._chain import GENESIS_PREV, seal
    from agentguard.audit._merkle import CompactRange
    from agentguard.storage import SQLiteStore

    async def create() -> None:
        async with SQLiteStore(path):
            pass

    anyio.run(create)  # the schema, then rows written directly (sealing is not measured)
    compact, prev = CompactRange(), GENESIS_PREV
    connection = sqlite3.connect(path)
    try:
        for start in range(0, n, 50_000):
            rows = []
            for seq in range(start, min(n, start + 50_000)):
                body = _body(seq, prev)
                if seq < 1000 and body != seal(decision(seq), seq, prev).body:
                    raise SystemExit("the benchmark's body template differs from seal()")
                digest = leaf_hash(body)
                rows.append((seq, prev, digest, body))
                compact.append(digest)
                prev = digest
            with connection:
                connection.executemany(
                    "INSERT INTO audit (seq, prev, hash, body) VALUES (?, ?, ?, ?)", rows
                )
    finally:
        connection.close()
    signer = Ed25519Signer.generate(ORIGIN)
    note = sign_checkpoint(Checkpoint(ORIGIN, n, compact.root()), [signer])
    return note, signer.vkey()


def _child(mode: str, path: str, note: str, vkey: str) -> None:
    """Verify once in this process and print one JSON line of figures."""
    import anyio

    from agentguard.audit._verify_store import verify_store
    from agentguard.storage import SQLiteStore

    async def run() -> tuple[bool, int]:
        async with SQLiteStore(path, read_only=True) as store:
            if mode in ("stream", "jobs"):
                jobs = 2 if mode == "jobs" else 1
                report = await verify_store(
                    store, [note], [vkey], origin=ORIGIN, jobs=jobs, url=f"sqlite:///{path}"
                )
            else:
                from tests.support.verify_oracle import verify_log as whole_log

                report = whole_log(await store.read(), [note], [vkey], origin=ORIGIN)
        return report.ok and report.anchored, report.size

    before = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.perf_counter()
    ok, size = anyio.run(run)
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_SELF)
    workers = resource.getrusage(resource.RUSAGE_CHILDREN)  # --jobs: the worker processes
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    cpu += workers.ru_utime + workers.ru_stime
    rss = max(after.ru_maxrss, workers.ru_maxrss)
    print(json.dumps({"ok": ok, "size": size, "cpu": cpu, "wall": wall, "rss_kib": rss}))


def _measure(mode: str, path: Path, note: str, vkey: str) -> dict[str, float]:
    out = subprocess.run(  # noqa: S603 - this script, with arguments it made
        [sys.executable, __file__, "--child", mode, str(path), note, vkey],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    figures: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    if not figures["ok"]:
        raise SystemExit(f"the {mode} verifier did not verify the benchmark log")
    return figures


def main() -> None:
    """Build, measure, print; record rows for ``run_all.py``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", action="store_true", help="also 10M events (stream only)")
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated log sizes")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return
    from report import Row, record

    sizes = [int(s) for s in args.sizes.split(",") if s]
    if args.large:
        sizes.append(10_000_000)
    print(f"audit verify on SQLite, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    print("events/s by CPU time (getrusage; the machine may be shared) and by wall time")
    header = (
        f"{'events':>10} {'path':7} {'ev/s CPU':>10} {'ev/s wall':>10} {'peak RSS':>9} "
        f"{'x old (wall)':>12}"
    )
    print(header)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as scratch:
        for n in sizes:
            path = Path(scratch) / f"audit-{n}.db"
            note, vkey = _build(path, n)
            stream = _measure("stream", path, note, vkey)
            jobs = _measure("jobs", path, note, vkey)
            whole = None if n > 2_000_000 else _measure("whole", path, note, vkey)
            for mode, figures in (("whole", whole), ("stream", stream), ("jobs 2", jobs)):
                if figures is None:
                    continue
                rate, wall = n / figures["cpu"], n / figures["wall"]
                ratio = "" if whole is None else f"{wall / (n / whole['wall']):.2f}"
                print(
                    f"{n:>10,} {mode:7} {rate:>10,.0f} {wall:>10,.0f} "
                    f"{figures['rss_kib'] / 1024:>7.0f} MiB {ratio:>12}"
                )
            if whole is not None:
                rows.append(
                    Row("audit", f"verify SQLite {n:,} (CPU)", n / stream["cpu"], "events/s",
                        "whole-log verifier (old path)", n / whole["cpu"], False)
                )  # fmt: skip
                rows.append(
                    Row("audit", f"verify SQLite {n:,}, --jobs 2 (wall)", n / jobs["wall"],
                        "events/s", "whole-log verifier (old path), wall", n / whole["wall"],
                        False)
                )  # fmt: skip
            path.unlink()
    size_note = f"targets: >= {TARGET_RATE:,} events/s; <= {TARGET_RSS_MIB} MiB peak RSS at 10M"
    print(size_note)
    record(rows)


if __name__ == "__main__":
    main()
