"""A writer killed mid-stream leaves a log that verifies and holds every acknowledged event."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio

from agentguard.audit import verify_log
from agentguard.storage import SQLiteStore

WRITER = textwrap.dedent(
    """
    import sys, anyio
    from agentguard.audit import Action, AuditEvent, AuditWriter
    from agentguard.storage import SQLiteStore
    from agentguard import SystemClock

    async def main(path):
        clock = SystemClock()
        async with SQLiteStore(path, clock=clock) as store:
            writer = AuditWriter(store, instance="crash-test")
            n = 0
            while True:
                entry = await writer.record(
                    AuditEvent(action=Action.DECISION, ts=clock.now(), path=f"/n/{n}")
                )
                print(entry.seq, flush=True)  # acknowledged: the append returned
                n += 1

    anyio.run(main, sys.argv[1])
    """
)


def test_sigkill_mid_stream_loses_nothing_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    acknowledged: list[int] = []
    try:
        for line in process.stdout:
            acknowledged.append(int(line))
            if len(acknowledged) >= 300:
                break
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        process.stdout.close()
    assert acknowledged == list(range(300))

    async def read() -> list[object]:
        async with SQLiteStore(path) as store:
            return list(await store.read())

    entries = anyio.run(read)
    report = verify_log(entries)  # type: ignore[arg-type]
    assert report.ok, [f.line() for f in report.findings]
    assert len(entries) >= len(acknowledged)
    paths = [e.event()["path"] for e in entries]  # type: ignore[attr-defined]
    assert paths[:300] == [f"/n/{n}" for n in range(300)]
