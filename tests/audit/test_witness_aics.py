"""A real, independent witness: aics-witness (C2SP tlog-witness, not ours) on loopback.

Two aics-witness servers run as separate processes from the aics venv. Our checkpointer
submits successive checkpoints of a SQLite log; both cosign; ``verify_log`` with a quorum of 2
passes and aics-tlog (also not ours) accepts the cosigned note with the same quorum. Then a
fork: an older copy of the database is restored and written to, its checkpoint signed with
the log key directly (a test-only signer path that skips our own fork refusal) and submitted
with a consistency proof from the witness's size: the witness refuses it (422), our client
reports the failure, and no cosignature is stored.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from agentguard.audit import (
    Checkpoint,
    Checkpointer,
    DirectoryCheckpointSink,
    leaf_hash,
    sign_checkpoint,
    verify_log,
)
from agentguard.audit._cosignatures import count_cosignatures
from agentguard.audit._merkle import root
from agentguard.audit._witness import WitnessClient
from agentguard.audit._witnessing import Witnesses, store_consistency_proof
from agentguard.storage import SQLiteStore
from tests.audit.witness_fakes import LOG, ORIGIN, events
from tests.support.aics import aics_python, tlog_script
from tests.support.servers import free_port

VKEY = re.compile(r"\S+\+[0-9a-f]{8}\+[A-Za-z0-9+/=]{44,}")


class AicsWitness:
    """One aics-witness server: ``init``, ``add-log``, ``serve`` on a free loopback port."""

    def __init__(self, directory: Path, name: str) -> None:
        directory.mkdir(parents=True)
        self.env = {**os.environ, "AICS_WITNESS_CONFIG": str(directory / "witness.json")}
        self.env.pop("WITNESS_SEED_HEX", None)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        out = self._run("init", "--name", name, "--listen", f"127.0.0.1:{self.port}")
        found = VKEY.findall(out)
        assert found, out
        self.vkey = found[-1]
        self._run("add-log", "--origin", ORIGIN, "--vkey", LOG.vkey())
        self.process = subprocess.Popen(
            [aics_python(), "-m", "aics_witness", "serve", "--log-level", "WARNING"],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while True:
            assert self.process.poll() is None, (
                self.process.stderr.read() if self.process.stderr else ""
            )
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "aics-witness did not become healthy"
            time.sleep(0.05)

    def _run(self, *args: str) -> str:
        done = subprocess.run(
            [aics_python(), "-m", "aics_witness", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout + done.stderr

    def client(self) -> WitnessClient:
        return WitnessClient(self.url, self.vkey, timeout=10)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stderr:
            self.process.stderr.close()


@pytest.fixture
def witnesses(tmp_path: Path) -> Iterator[list[AicsWitness]]:
    aics_python()  # skips (or fails in CI) when the aics venv cannot be built
    started: list[AicsWitness] = []
    try:
        for n in (1, 2):
            started.append(AicsWitness(tmp_path / f"w{n}", f"witness{n}.example.test/w"))
        yield started
    finally:
        for witness in started:
            witness.stop()


async def fill(path: Path, count: int, tag: str) -> None:
    async with SQLiteStore(path) as store:
        for event in events(count, tag):
            await store.append([event])


AICS_VERIFY = r"""
import json, sys
from aics_tlog import parse_vkey
from aics_tlog.checkpoint import verify_checkpoint
from aics_tlog.note import parse_note
args = json.loads(sys.stdin.read())
result = verify_checkpoint(parse_note(args["note"]), parse_vkey(args["log"]),
                           [parse_vkey(v) for v in args["witnesses"]], args["quorum"])
print(json.dumps({"ok": bool(result.ok), "count": result.cosignature_count}))
"""


def restore(snapshot: Path, path: Path) -> None:
    """Put an old copy of the database file back, as a restore from backup does."""
    for side in (Path(f"{path}-wal"), Path(f"{path}-shm")):
        side.unlink(missing_ok=True)
    shutil.copyfile(snapshot, path)


def witnessed_history(
    witnesses: list[AicsWitness], tmp_path: Path
) -> tuple[Path, Path, DirectoryCheckpointSink, list[str]]:
    """Checkpoints at 3, 8, 17 and 18 events, each cosigned by both witnesses; a copy at 8."""
    path, snapshot = tmp_path / "audit.db", tmp_path / "snapshot-at-8.db"
    sink = DirectoryCheckpointSink(tmp_path / "checkpoints")
    cosigned: list[str] = []
    clients = [w.client() for w in witnesses]

    async def one_round(count: int) -> None:
        # A fresh checkpointer each round, as after a restart: it learns each witness's size.
        async with SQLiteStore(path) as store:
            for event in events(count, f"r{count}"):
                await store.append([event])
            checkpointer = Checkpointer(
                store, LOG, ORIGIN, sink, witnesses=clients, witness_quorum=2
            )
            assert checkpointer.witnesses is not None
            note = await checkpointer.checkpoint()
            cosigned.append(await checkpointer.witnesses.witness(note))
            results = checkpointer.witnesses.last_results
            assert all(r.ok for r in results), [r.error for r in results]
            assert checkpointer.witnesses.newest is not None

    async def history() -> None:  # one event loop: the clients keep their connections
        for count in (3, 5):
            await one_round(count)
        shutil.copyfile(path, snapshot)  # the store is closed: the file holds all 8 events
        await one_round(9)
        for client in clients:  # as a client that never talked to the witnesses: a 409 first
            client.size = None
        await one_round(1)
        for client in clients:
            await client.aclose()

    anyio.run(history)
    return path, snapshot, sink, cosigned


def test_aics_witnesses_cosign_successive_checkpoints(
    witnesses: list[AicsWitness], tmp_path: Path
) -> None:
    path, _, sink, cosigned = witnessed_history(witnesses, tmp_path)
    vkeys = [w.vkey for w in witnesses]
    keys = [w.client().key for w in witnesses]
    assert len(cosigned) == 4
    assert count_cosignatures([cosigned[-1]], keys).count() == 2

    async def entries() -> list:  # type: ignore[type-arg]
        async with SQLiteStore(path) as store:
            return await store.read()

    report = verify_log(anyio.run(entries), sink._notes(), [LOG.vkey()], witnesses=vkeys, quorum=2)
    assert report.ok and report.size == 18, [f.line() for f in report.findings]
    document = {"note": cosigned[-1], "log": LOG.vkey(), "witnesses": vkeys, "quorum": 2}
    verdict = json.loads(tlog_script(AICS_VERIFY, stdin=json.dumps(document)))
    assert verdict == {"ok": True, "count": 2}


def test_aics_witnesses_refuse_a_forked_log(witnesses: list[AicsWitness], tmp_path: Path) -> None:
    path, snapshot, sink, _ = witnessed_history(witnesses, tmp_path)
    keys = [w.client().key for w in witnesses]
    # The fork: the backup at 8 events restored and written to, past the witnessed size 18.
    restore(snapshot, path)
    anyio.run(fill, path, 12, "forked")

    async def fork_and_submit() -> None:
        async with SQLiteStore(path) as store:
            leaves = [leaf_hash(e.body) for e in await store.read()]
            assert len(leaves) == 20
            # The test-only signer path: the log key signs directly, no fork refusal.
            note = sign_checkpoint(
                Checkpoint(origin=ORIGIN, size=len(leaves), root=root(leaves)), [LOG]
            )

            async def proof(old: int, new: int) -> list[bytes]:
                return await store_consistency_proof(store, old, new)

            fresh = [w.client() for w in witnesses]  # old 0 first: the 409 names 18
            pool = Witnesses(fresh, 2, sink, proof)
            assert all(c.size is None for c in fresh)
            before = sorted(p.name for p in sink.directory.iterdir())
            assert await pool.witness(note) == note
            for result in pool.last_results:
                assert not result.ok and result.status == 422, result
                assert "fork" in (result.error or "")
            assert sorted(p.name for p in sink.directory.iterdir()) == before
            assert pool.newest is None and sorted(pool.failing()) == sorted(k.name for k in keys)
            await pool.aclose()

    anyio.run(fork_and_submit)
