"""Regression tests for the witness review findings (attack 2-4, 6, 7; security 2-4, 7, 10-12).

Cheap shared consistency proofs, our clock for the witnessed age, 409 sizes validated before
they are kept, one identity per witness, lenient parsing of other witnesses' lines, no
Content-Encoding, bytes-exact note files and a bounded size line, verify's quorum.
"""

from __future__ import annotations

import base64
import gzip
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import anyio
import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentguard.audit import (
    AuditEntry,
    Category,
    Checkpointer,
    DirectoryCheckpointSink,
    MemoryCheckpointSink,
    leaf_hash,
    verify_log,
)
from agentguard.audit._checkpoints import _split_note
from agentguard.audit._cosignatures import (
    CosignatureSigner,
    add_cosignatures,
    count_cosignatures,
)
from agentguard.audit._merkle import consistency_proof
from agentguard.audit._sinks import note_size
from agentguard.audit._verify_report import witness_summary
from agentguard.audit._witness import WitnessClient
from agentguard.audit._witness_proofs import LogProofs
from agentguard.audit._witnessing import FUTURE_SKEW, Witnesses
from agentguard.errors import ConfigurationError, UsageError
from agentguard.storage import MemoryStore
from tests.audit.witness_fakes import LOG, ORIGIN, FakeWitness, RawStream, events

URL = "https://witness.example.test/w"


def client_for(witness: FakeWitness, timeout: float = 5.0) -> WitnessClient:
    return WitnessClient(URL, witness.vkey(), timeout=timeout, transport=witness.transport())


class CountingStore(MemoryStore):
    """A MemoryStore that counts the entries read."""

    def __init__(self) -> None:
        super().__init__()
        self.read_count = 0

    async def read(self, start: int = 0, stop: int | None = None) -> list[AuditEntry]:
        found = await super().read(start, stop)
        self.read_count += len(found)
        return found


async def grown(store: MemoryStore, count: int, tag: str = "e") -> None:
    batch = events(count, tag)
    for start in range(0, count, 500):
        await store.append(batch[start : start + 500])


# --- proofs: cheap, cached, shared (attack 2, security 7) -------------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(min_value=1, max_value=1300).flatmap(
        lambda n: st.tuples(st.just(n), st.integers(min_value=1, max_value=n))
    ),
    st.booleans(),
)
def test_cached_proofs_are_the_reference_proof(sizes: tuple[int, int], fed: bool) -> None:
    new, old = sizes

    async def scenario() -> None:
        store = MemoryStore()
        await grown(store, new)
        leaves = [leaf_hash(e.body) for e in await store.read()]
        proofs = LogProofs(store, batch=300)
        if fed:  # what the checkpointer hands over while catching up, in two pieces
            proofs.feed(0, leaves[: new // 2])
            proofs.feed(new // 2, leaves[new // 2 :])
        assert await proofs.proof(old, new) == consistency_proof(leaves, old, new)
        smaller = max(1, old - 1)  # a second proof from the warm cache
        assert await proofs.proof(smaller, new) == consistency_proof(leaves, smaller, new)

    anyio.run(scenario)


def test_a_witness_round_on_a_big_log_reads_only_the_new_edge() -> None:
    witness = FakeWitness("w.example/1")

    async def scenario() -> None:
        store, sink = CountingStore(), MemoryCheckpointSink()
        await grown(store, 5000)
        checkpointer = Checkpointer(store, LOG, ORIGIN, sink, witnesses=[client_for(witness)])
        assert checkpointer.witnesses is not None
        await checkpointer.witnesses.witness(await checkpointer.checkpoint())
        for step in range(3):
            await grown(store, 3, f"s{step}")
            note = await checkpointer.checkpoint()
            store.read_count = 0
            cosigned = await checkpointer.witnesses.witness(note)
            assert cosigned != note and witness.size == 5003 + 3 * step
            # Before: the proof re-derived every subtree from bodies, ~5000 entries a round.
            assert store.read_count < 600, store.read_count

    anyio.run(scenario)


def test_one_proof_per_size_pair_is_shared_by_every_witness() -> None:
    witnesses = [FakeWitness(f"w.example/{n}") for n in range(3)]

    async def scenario() -> None:
        store, sink = MemoryStore(), MemoryCheckpointSink()
        await grown(store, 40)
        proofs = LogProofs(store)
        calls: list[tuple[int, int]] = []

        async def counted(old: int, new: int) -> list[bytes]:
            calls.append((old, new))
            return await proofs.proof(old, new)

        checkpointer = Checkpointer(store, LOG, ORIGIN, MemoryCheckpointSink())
        pool = Witnesses([client_for(w) for w in witnesses], 3, sink, counted)
        await pool.witness(await checkpointer.checkpoint())
        await grown(store, 5, "b")
        await pool.witness(await checkpointer.checkpoint())
        assert calls == [(40, 45)]  # the first round needs no proof (old 0)
        assert pool.newest is not None and pool.newest.size == 45

    anyio.run(scenario)


# --- timestamps (attack 3, 6; security 5, 10) -------------------------------------------------


def _blob_line(signer: CosignatureSigner, key: Ed25519PrivateKey, body: bytes, ts: int) -> str:
    message = b"cosignature/v1\ntime %d\n" % ts + body
    blob = signer.key.key_id + ts.to_bytes(8, "big") + key.sign(message)
    return f"\u2014 {signer.name} {base64.b64encode(blob).decode()}\n"


def test_cosignature_timestamps_beyond_2_63_are_refused() -> None:
    key = Ed25519PrivateKey.generate()
    signer = CosignatureSigner("w.example/1", key)
    note = FakeNote.make(3)
    body = _split_note(note)[0]
    for ts, counted in ((2**63 - 1, 1), (2**63, 0), (2**64 - 1, 0)):
        cosigned = add_cosignatures(note, [_blob_line(signer, key, body, ts)])
        tally = count_cosignatures([cosigned], [signer.key])
        assert tally.count() == counted


class FakeNote:
    @staticmethod
    def make(count: int, sink: MemoryCheckpointSink | None = None) -> str:
        async def go() -> str:
            store = MemoryStore()
            await grown(store, count)
            target = sink if sink is not None else MemoryCheckpointSink()
            return await Checkpointer(store, LOG, ORIGIN, target).checkpoint()

        return anyio.run(go)


def test_a_future_dated_cosignature_never_makes_the_log_look_freshly_witnessed() -> None:
    witness = FakeWitness("w.example/1")
    now = [time.time()]

    async def future(request: httpx.Request) -> httpx.Response | None:
        if witness.size < 3:
            return None  # honest the first time
        await witness.answer_honestly(request)  # it checks the proof and moves on
        text = _split_note(request.content.decode().partition("\n\n")[2])[0]
        return httpx.Response(
            200, content=witness.signer.line(text, int(now[0]) + 10 * 365 * 86400)
        )

    witness.override = future

    async def scenario() -> None:
        store, sink = MemoryStore(), MemoryCheckpointSink()
        checkpointer = Checkpointer(store, LOG, ORIGIN, sink, witnesses=[client_for(witness)])
        pool = checkpointer.witnesses
        assert pool is not None
        pool.clock = lambda: now[0]
        await grown(store, 3)
        await pool.witness(await checkpointer.checkpoint())
        assert pool.newest is not None and pool.newest.size == 3
        assert pool.newest.at == now[0]  # our clock, when the quorum was verified
        now[0] += 100
        await grown(store, 3, "b")
        cosigned = await pool.witness(await checkpointer.checkpoint())
        assert count_cosignatures([cosigned], [witness.signer.key]).count() == 1  # valid...
        assert pool.newest.size == 3  # ...but not fresh: the age keeps growing
        assert pool.age() == pytest.approx(100)
        # After a restart the same holds: the cosignature's time is no freshness either.
        fresh = Witnesses([client_for(witness)], 1, sink, pool.proof, clock=lambda: now[0])
        await fresh.load(await sink.notes())
        assert fresh.newest is not None and fresh.newest.size == 3
        age = fresh.age()
        assert age is not None and age >= 100 - FUTURE_SKEW

    anyio.run(scenario)


def test_restart_recovers_the_newest_witnessed_checkpoint_past_newer_plain_notes(
    tmp_path: Path,
) -> None:
    w1 = FakeWitness("w.example/1")
    stranger = CosignatureSigner.generate("audit.example.test")  # not the log's key

    async def scenario() -> None:
        store, sink = MemoryStore(), DirectoryCheckpointSink(tmp_path)
        checkpointer = Checkpointer(store, LOG, ORIGIN, sink, witnesses=[client_for(w1)])
        assert checkpointer.witnesses is not None
        await grown(store, 3)
        await checkpointer.witnesses.witness(await checkpointer.checkpoint())
        for step in range(3):  # newer checkpoints, never cosigned (the witness went away)
            await grown(store, 2, f"n{step}")
            await checkpointer.checkpoint()
        # Higher sizes that must not count: another origin, and a note the log never signed.
        forged = []
        for origin, size in (("other.example/log", 99), (ORIGIN, 50)):
            body = f"{origin}\n{size}\n{base64.b64encode(bytes(32)).decode()}\n".encode()
            signed = body.decode() + "\n" + stranger.line(body, 1)
            forged.append(add_cosignatures(signed, [w1.signer.line(body, 5)]))
        await sink.publish(99, forged[0])
        restarted = Checkpointer(store, LOG, ORIGIN, sink, witnesses=[client_for(w1)])
        assert restarted.witnesses is not None
        await grown(store, 1, "last")
        await restarted.checkpoint()  # loads the pool
        newest = restarted.witnesses.newest
        assert newest is not None and newest.size == 3 and newest.at <= time.time()
        # Deterministic and checked: the forged note of our origin is skipped too.
        for order in (1, -1):
            pool = Witnesses([client_for(w1)], 1, sink, LogProofs(store).proof)
            await pool.load([*await sink.notes(), forged[1]][::order], restarted._trusted)
            assert pool.newest is not None and pool.newest.size == 3

    anyio.run(scenario)


# --- 409 (attack 4) ---------------------------------------------------------------------------


def test_a_409_beyond_the_log_is_never_adopted_and_alerts_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    witness = FakeWitness("w.example/1")
    answers = ["5003\n", "5003\n"]

    async def ahead(request: httpx.Request) -> httpx.Response | None:
        if answers:
            return httpx.Response(
                409, content=answers.pop(), headers={"Content-Type": "text/x.tlog.size"}
            )
        return None

    witness.override = ahead

    async def scenario() -> None:
        store = MemoryStore()
        await grown(store, 3)
        note = await Checkpointer(store, LOG, ORIGIN, MemoryCheckpointSink()).checkpoint()
        client = client_for(witness)
        proofs = LogProofs(store)
        with caplog.at_level(logging.CRITICAL, logger="agentguard.audit"):
            first = await client.submit(note, proofs.proof, now=0.0)
            second = await client.submit(note, proofs.proof, now=100.0)
        assert not first.ok and not second.ok and "larger than the log" in (first.error or "")
        assert client.size is None  # never adopted
        alerts = [r for r in caplog.records if r.levelno == logging.CRITICAL]
        assert len(alerts) == 1 and "rolled back" in alerts[0].getMessage()
        third = await client.submit(note, proofs.proof, now=10_000.0)  # after the back-off
        assert third.ok and client.size == 3 and witness.size == 3

    anyio.run(scenario)


@pytest.mark.parametrize(
    "body", ["9223372036854775808\n", "99999999999999999999\n", "-1\n", "007\n", "1e3\n"]
)
def test_absurd_409_sizes_are_malformed(body: str) -> None:
    async def absurd(request: httpx.Request) -> httpx.Response:
        return httpx.Response(409, content=body, headers={"Content-Type": "text/x.tlog.size"})

    witness = FakeWitness("w.example/1", override=absurd)

    async def scenario() -> None:
        client = client_for(witness)
        result = await client.submit(NOTE3, LogProofs(MemoryStore()).proof)
        assert not result.ok and "bad 409" in (result.error or "") and client.size is None

    anyio.run(scenario)


# --- one identity per witness (security 4, attack nit) ---------------------------------------


NOTE3 = FakeNote.make(3)


def test_two_keys_under_one_name_count_once_and_never_crash() -> None:
    old, new = CosignatureSigner.generate("w.example/1"), CosignatureSigner.generate("w.example/1")
    note = FakeNote.make(3)
    body = _split_note(note)[0]
    cosigned = add_cosignatures(note, [old.line(body, 10), new.line(body, 20)])
    tally = count_cosignatures([cosigned], [old.key, new.key])
    assert tally.count() == 1 and tally.timestamps == {"w.example/1": 20}
    assert tally.reached_at(2) is None and tally.reached_at(1) == 20
    same_key = CosignatureSigner("w.example/alias", old._key)
    aliased = add_cosignatures(note, [old.line(body, 10), same_key.line(body, 30)])
    assert count_cosignatures([aliased], [old.key, same_key.key]).count() == 1


def test_duplicate_witness_configurations_are_refused() -> None:
    first = CosignatureSigner.generate("w.example/1")
    twin = CosignatureSigner.generate("w.example/1")
    alias = CosignatureSigner("w.example/2", first._key)
    for other in (twin, alias):
        vkeys = [first.vkey(), other.vkey()]
        clients = [WitnessClient(URL, v) for v in vkeys]
        with pytest.raises(UsageError):
            Witnesses(clients, 1, MemoryCheckpointSink(), LogProofs(MemoryStore()).proof)
        with pytest.raises(UsageError):
            witness_summary({}, {}, vkeys, 2)
    from agentguard._config_observe import WitnessSettings
    from agentguard.gateway._readiness import witness_clients

    same = [WitnessSettings(url=URL, vkey=first.vkey()), WitnessSettings(url=URL, vkey=twin.vkey())]
    with pytest.raises(ConfigurationError, match=r"audit\.witnesses"):
        witness_clients(same)


# --- surviving mutants (security 2, 3) -------------------------------------------------------


def _history(witnesses: Sequence[FakeWitness], cosigning: Sequence[FakeWitness]):  # type: ignore[no-untyped-def]
    async def go() -> tuple[list[AuditEntry], list[str]]:
        store, sink = MemoryStore(), MemoryCheckpointSink()
        await grown(store, 4)
        clients = [client_for(w) for w in cosigning]
        checkpointer = Checkpointer(store, LOG, ORIGIN, sink, witnesses=clients)
        assert checkpointer.witnesses is not None
        await checkpointer.witnesses.witness(await checkpointer.checkpoint())
        return await store.read(), await sink.notes()

    return anyio.run(go)


def test_a_missed_quorum_fails_verify() -> None:
    a, b = FakeWitness("w.example/a"), FakeWitness("w.example/b")
    entries, notes = _history([a, b], [a])
    report = verify_log(entries, notes, [LOG.vkey()], witnesses=[a.vkey(), b.vkey()], quorum=2)
    assert not report.ok
    assert [f.category for f in report.findings] == [Category.UNWITNESSED]
    assert verify_log(entries, notes, [LOG.vkey()], witnesses=[a.vkey()], quorum=1).ok


def test_cosignatures_on_another_note_text_are_not_counted() -> None:
    w = FakeWitness("w.example/1")
    older = FakeNote.make(3)
    newer = FakeNote.make(4)
    cosigned_older = add_cosignatures(older, [w.signer.line(_split_note(older)[0], 7)])
    body = _split_note(newer)[0]
    assert count_cosignatures([cosigned_older, newer], [w.signer.key], body).count() == 0

    async def scenario() -> None:
        pool = Witnesses([client_for(w)], 1, MemoryCheckpointSink(), LogProofs(MemoryStore()).proof)
        await pool.load([newer, cosigned_older])
        assert pool.newest is not None and pool.newest.size == 3  # not 4

    anyio.run(scenario)


def test_verify_log_refuses_quorum_zero_with_witnesses() -> None:
    a = FakeWitness("w.example/a")
    with pytest.raises(UsageError):
        verify_log([], [], [LOG.vkey()], witnesses=[a.vkey()], quorum=0)


def test_witness_summary_refuses_quorum_zero() -> None:
    with pytest.raises(UsageError):
        witness_summary({}, {}, [FakeWitness("w.example/a").vkey()], 0)


# --- the client's transport and parsing (attack 7, security 11) ------------------------------


def test_an_encoded_answer_is_refused_before_decompression() -> None:
    witness = FakeWitness("w.example/1")

    async def gzipped(request: httpx.Request) -> httpx.Response:
        honest = await witness.answer_honestly(request)
        packed = gzip.compress(honest.content)
        headers = {"Content-Encoding": "gzip", "Content-Type": "text/plain"}
        return httpx.Response(200, headers=headers, stream=RawStream(packed))

    witness.override = gzipped

    async def scenario() -> None:
        client = client_for(witness)
        result = await client.submit(NOTE3, LogProofs(MemoryStore()).proof)
        assert not result.ok and "request failed" in (result.error or "")

    anyio.run(scenario)


def test_malformed_lines_under_other_names_are_ignored() -> None:
    witness = FakeWitness("w.example/1")
    junk = [
        "\u2014 other.example/w !!!not-base64\n",
        "\u2014 " + "x" * 300 + " AAAA\n",
        "\u2014 other.example/w QUJDREVGRw\n",  # non-canonical (no padding)
    ]

    async def noisy(request: httpx.Request) -> httpx.Response:
        honest = await witness.answer_honestly(request)
        return httpx.Response(200, content="".join(junk).encode() + honest.content)

    witness.override = noisy

    async def scenario() -> None:
        client = client_for(witness)
        result = await client.submit(NOTE3, LogProofs(MemoryStore()).proof)
        assert result.ok and len(result.lines) == 1

    anyio.run(scenario)


# --- the directory sink (auditor F9, security 6) ---------------------------------------------


def test_note_files_are_read_bytes_exact(tmp_path: Path) -> None:
    sink = DirectoryCheckpointSink(tmp_path)
    note = FakeNote.make(3)
    (tmp_path / f"{3:020d}.note").write_bytes(note.replace("\n", "\r\n").encode())
    (read,) = sink._notes()
    assert "\r\n" in read and read != note  # the CRLF copy is not the signed note
    assert verify_log([], [read], [LOG.vkey()], origin=ORIGIN).ok is False


@given(st.integers(min_value=21, max_value=6000))
def test_an_overlong_size_line_is_unreadable_not_an_error(digits: int) -> None:
    assert note_size("origin\n" + "9" * digits + "\nroot\n") is None
    assert note_size("origin\n" + "9" * 20 + "\nroot\n") == ("origin", int("9" * 20))
