"""The tlog-witness client, the checkpointer's witness pool and verify's quorum, end to end.

Against an in-test fake witness (``witness_fakes.FakeWitness``: it checks the log signature and
the RFC 6962 consistency proof, as a witness does): cosignatures collected and stored, the 409
retry from the witness's size, refusals (403, 404, 422, 5xx), junk and oversized answers,
redirects, timeouts and back-off, a slow witness that must not hold up checkpoints, the proof
built from the store against the reference proof, and ``verify --witness --quorum``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import anyio
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentguard.audit import (
    Category,
    Checkpointer,
    DirectoryCheckpointSink,
    MemoryCheckpointSink,
    leaf_hash,
    verify_log,
)
from agentguard.audit._cosignatures import count_cosignatures
from agentguard.audit._merkle import consistency_proof
from agentguard.audit._witness import MAX_RESPONSE, WitnessClient
from agentguard.audit._witnessing import store_consistency_proof
from agentguard.errors import UsageError
from agentguard.storage import MemoryStore, SQLiteStore
from tests.audit.witness_fakes import LOG, ORIGIN, FakeWitness, events, slow

URL = "https://witness.example.test/w"


def client_for(witness: FakeWitness, timeout: float = 5.0) -> WitnessClient:
    return WitnessClient(URL, witness.vkey(), timeout=timeout, transport=witness.transport())


async def grown(store: MemoryStore, count: int, tag: str = "e") -> None:
    for event in events(count, tag):
        await store.append([event])


def test_cosignatures_are_collected_verified_and_stored() -> None:
    w1, w2, w3 = FakeWitness("w.example/1"), FakeWitness("w.example/2"), FakeWitness("w.example/3")

    async def scenario() -> None:
        store, sink = MemoryStore(), MemoryCheckpointSink()
        clients = [client_for(w1), client_for(w2)]
        checkpointer = Checkpointer(store, LOG, ORIGIN, sink, witnesses=clients, witness_quorum=2)
        assert checkpointer.witnesses is not None
        for size, tag in ((5, "a"), (12, "b"), (13, "c")):
            await grown(store, size - len(await store.read()), tag)
            note = await checkpointer.checkpoint()
            cosigned = await checkpointer.witnesses.witness(note)
            assert cosigned.startswith(note) and cosigned != note
            tally = count_cosignatures([cosigned], [c.key for c in clients])
            assert tally.count() == 2 and not tally.invalid
            assert (w1.size, w2.size) == (size, size)
            assert checkpointer.witnesses.newest is not None
            assert checkpointer.witnesses.newest.size == size
        age = checkpointer.witnesses.age()
        assert age is not None and 0 <= age < 5
        notes = await sink.notes()
        assert len(notes) == 6  # each checkpoint: the log-signed note, then the cosigned one
        entries = await store.read()
        good = verify_log(entries, notes, [LOG.vkey()], witnesses=[w1.vkey(), w2.vkey()], quorum=2)
        assert (
            good.ok
            and good.witness is not None
            and good.witness["cosigned_by"]
            == [
                "w.example/1",
                "w.example/2",
            ]
        )
        short = verify_log(
            entries, notes, [LOG.vkey()], witnesses=[w1.vkey(), w2.vkey(), w3.vkey()], quorum=3
        )
        assert not short.ok and short.first is not None
        assert short.first.category is Category.UNWITNESSED
        assert "carries 2 valid cosignature(s)" in short.first.detail
        assert "3 required" in short.first.detail
        # Only log-signed notes (the witnesses' lines stripped): unwitnessed.
        bare = [n for n in notes if not count_cosignatures([n], [c.key for c in clients]).count()]
        none = verify_log(entries, bare, [LOG.vkey()], witnesses=[w1.vkey()])
        assert not none.ok and none.first is not None and "carries 0" in none.first.detail
        for client in clients:
            await client.aclose()

    anyio.run(scenario)


def test_a_409_is_retried_once_from_the_witness_size() -> None:
    witness = FakeWitness("w.example/1")

    async def scenario() -> None:
        store, sink = MemoryStore(), MemoryCheckpointSink()
        first = Checkpointer(store, LOG, ORIGIN, sink, witnesses=[client_for(witness)])
        await grown(store, 6)
        assert first.witnesses is not None
        await first.witnesses.witness(await first.checkpoint())
        assert witness.size == 6
        # A restart: a new client knows nothing of the witness and sends "old 0".
        await grown(store, 5, "more")
        second = Checkpointer(store, LOG, ORIGIN, sink, witnesses=[client_for(witness)])
        assert second.witnesses is not None
        witness.requests.clear()
        cosigned = await second.witnesses.witness(await second.checkpoint())
        assert [r.split(b"\n", 1)[0] for r in witness.requests] == [b"old 0", b"old 6"]
        assert witness.size == 11 and second.witnesses.last_results[0].ok
        assert count_cosignatures([cosigned], [second.witnesses.clients[0].key]).count() == 1

    anyio.run(scenario)


@pytest.mark.parametrize(
    ("status", "words"),
    [
        (403, "does not trust"),
        (404, "origin"),
        (422, "fork"),
        (500, "unexpected"),
        (400, "malformed"),
    ],
)
def test_refusals_are_failures_without_cosignatures_and_back_off(status: int, words: str) -> None:
    async def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=b"no")

    witness = FakeWitness("w.example/1", override=refuse)

    async def scenario() -> None:
        store, sink = MemoryStore(), MemoryCheckpointSink()
        checkpointer = Checkpointer(store, LOG, ORIGIN, sink, witnesses=[client_for(witness)])
        await grown(store, 3)
        assert checkpointer.witnesses is not None
        note = await checkpointer.checkpoint()
        assert await checkpointer.witnesses.witness(note) == note
        (result,) = checkpointer.witnesses.last_results
        assert not result.ok and result.status == status and words in (result.error or "")
        assert await sink.notes() == [note]  # nothing cosigned was published
        assert checkpointer.witnesses.newest is None
        assert checkpointer.witnesses.failing() == ["w.example/1"]
        await checkpointer.witnesses.witness(note)  # backing off: no second request
        assert len(witness.requests) == 1
        assert "backing off" in (checkpointer.witnesses.last_results[0].error or "")

    anyio.run(scenario)


def submit_once(witness: FakeWitness, note: str, timeout: float = 5.0) -> tuple[bool, str]:
    async def go() -> tuple[bool, str]:
        client = client_for(witness, timeout)

        async def no_proof(old: int, new: int) -> list[bytes]:
            return []

        result = await client.submit(note, no_proof)
        await client.aclose()
        return result.ok, result.error or ""

    return anyio.run(go)


def a_note() -> str:
    async def make() -> str:
        store = MemoryStore()
        await grown(store, 2)
        return await Checkpointer(store, LOG, ORIGIN, MemoryCheckpointSink()).checkpoint()

    return anyio.run(make)


NOTE = a_note()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from([200, 409]),
    st.binary(max_size=400) | st.text(max_size=200).map(str.encode),
    st.sampled_from(["text/plain", "text/x.tlog.size", ""]),
)
def test_junk_answers_never_crash_and_are_never_accepted(
    status: int, body: bytes, kind: str
) -> None:
    async def junk(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=body, headers={"Content-Type": kind})

    ok, error = submit_once(FakeWitness("w.example/1", override=junk), NOTE)
    assert not ok and error


def test_a_valid_line_by_another_key_or_a_bad_line_by_ours_is_refused() -> None:
    other = FakeWitness("w.example/1")  # same name, another key: its line is not ours

    async def foreign(request: httpx.Request) -> httpx.Response:
        text = NOTE[: NOTE.rfind("\n\n") + 1].encode()
        return httpx.Response(200, content=other.signer.line(text, 1))

    ok, error = submit_once(FakeWitness("w.example/1", override=foreign), NOTE)
    assert not ok and "no cosignature under the witness's key" in error

    witness = FakeWitness("w.example/1")

    async def wrong_body(request: httpx.Request) -> httpx.Response:
        line = witness.signer.line(b"another\n1\n" + b"A" * 43 + b"=\n", 1)
        return httpx.Response(200, content=line)

    witness.override = wrong_body
    ok, error = submit_once(witness, NOTE)
    assert not ok and "does not verify" in error


def test_oversized_answers_and_redirects_are_failures() -> None:
    async def huge(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content="\u2014 x ".encode() + b"A" * (MAX_RESPONSE + 10))

    ok, error = submit_once(FakeWitness("w.example/1", override=huge), NOTE)
    assert not ok and "request failed" in error

    witness = FakeWitness("w.example/1")

    async def redirect(request: httpx.Request) -> httpx.Response | None:
        if request.url.host == "elsewhere.test":
            return None  # would cosign, if the client followed
        return httpx.Response(307, headers={"Location": "https://elsewhere.test/add-checkpoint"})

    witness.override = redirect
    ok, error = submit_once(witness, NOTE)
    assert not ok and "HTTP 307" in error and len(witness.requests) == 1


def test_timeouts_are_failures() -> None:
    async def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    ok, error = submit_once(FakeWitness("w.example/1", override=timeout), NOTE)
    assert not ok and error == "timed out"


def test_a_slow_witness_holds_up_neither_checkpoints_nor_the_other_witnesses() -> None:
    fast, stuck = FakeWitness("w.example/fast"), FakeWitness("w.example/slow", override=slow)

    async def scenario() -> None:
        store, sink = MemoryStore(), MemoryCheckpointSink()
        clients = [client_for(fast), client_for(stuck, timeout=2.0)]
        checkpointer = Checkpointer(store, LOG, ORIGIN, sink, witnesses=clients)
        assert checkpointer.witnesses is not None
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(checkpointer.witnesses.run)
            started = time.monotonic()
            for round_ in range(3):
                await grown(store, 2, f"r{round_}")
                await checkpointer.checkpoint()
            assert time.monotonic() - started < 1.0  # signing never waits for witnesses
            deadline = time.monotonic() + 10
            while checkpointer.witnesses.newest is None or fast.size < 6:
                assert time.monotonic() < deadline, "the fast witness never cosigned"
                await anyio.sleep(0.01)
            # Each witness runs on its own: the fast one cosigned every checkpoint while the
            # slow one's first request was still hanging (its 5 s deadline not yet reached).
            assert len(stuck.requests) == 1 and time.monotonic() - started < 5
            assert "w.example/slow" not in checkpointer.witnesses.failing()
            while "w.example/slow" not in checkpointer.witnesses.failing():
                assert time.monotonic() < deadline, "the slow witness never timed out"
                await anyio.sleep(0.01)
            tasks.cancel_scope.cancel()
        newest = checkpointer.witnesses.newest
        assert newest is not None and newest.size == 6

    anyio.run(scenario)


def test_witness_urls_must_be_https_or_loopback() -> None:
    vkey = FakeWitness("w.example/1").vkey()
    for url in ("http://witness.example/", "ftp://x/", "witness.example", "http://10.0.0.1/"):
        with pytest.raises(UsageError):
            WitnessClient(url, vkey)
    for url in ("https://witness.example/", "http://127.0.0.1:7380/", "http://[::1]:1/"):
        assert WitnessClient(url, vkey).url == url.rstrip("/")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(min_value=1, max_value=70).flatmap(
        lambda n: st.tuples(st.just(n), st.integers(min_value=1, max_value=n))
    )
)
def test_the_store_proof_is_the_reference_proof(sizes: tuple[int, int]) -> None:
    new, old = sizes

    async def scenario() -> None:
        store = MemoryStore()
        await grown(store, new)
        leaves = [leaf_hash(e.body) for e in await store.read()]
        built = await store_consistency_proof(store, old, new, batch=7)
        assert built == consistency_proof(leaves, old, new)

    anyio.run(scenario)


def test_fork_refusal_still_reads_cosigned_notes(tmp_path: Path) -> None:
    """A directory sink holding cosigned notes: a restart on the grown log still signs."""
    witness = FakeWitness("w.example/1")
    path, sink = tmp_path / "audit.db", DirectoryCheckpointSink(tmp_path / "checkpoints")

    async def scenario() -> None:
        async with SQLiteStore(path) as store:
            checkpointer = Checkpointer(store, LOG, ORIGIN, sink, witnesses=[client_for(witness)])
            await grown(store, 4)  # type: ignore[arg-type]
            assert checkpointer.witnesses is not None
            await checkpointer.witnesses.witness(await checkpointer.checkpoint())
        assert len(list(sink.directory.iterdir())) == 2
        async with SQLiteStore(path) as store:
            await grown(store, 2, "later")  # type: ignore[arg-type]
            restarted = Checkpointer(store, LOG, ORIGIN, sink, witnesses=[client_for(witness)])
            await restarted.checkpoint()
            assert restarted.healthy
            assert restarted.witnesses is not None and restarted.witnesses.newest is not None
            assert restarted.witnesses.newest.size == 4  # recovered from the cosigned note

    anyio.run(scenario)


def test_gateway_readyz_reports_witness_age_and_stays_ready_when_witnesses_fail() -> None:
    from agentguard.config import load_settings
    from agentguard.gateway import Gateway, build_gateway
    from tests.test_audit_fork import ENV

    good = FakeWitness("w.example/1")

    async def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    bad = FakeWitness("w.example/2", override=down)

    async def scenario() -> None:
        built = build_gateway(load_settings(environ=ENV))
        store = built.store
        checkpointer = Checkpointer(
            store,
            LOG,
            ORIGIN,
            MemoryCheckpointSink(),
            witnesses=[client_for(good), client_for(bad)],
        )
        gateway = Gateway(
            built.settings, store, built.guard, proxies={}, minters={}, checkpointer=checkpointer
        )
        transport = httpx.ASGITransport(app=gateway.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:
            first = (await client.get("/readyz")).json()
            assert first["status"] == "ready" and first["audit_witnessed_age"] is None
            await grown(store, 3)
            assert checkpointer.witnesses is not None
            await checkpointer.witnesses.witness(await checkpointer.checkpoint())
            answer = await client.get("/readyz")
        document = answer.json()
        assert answer.status_code == 200 and document["status"] == "ready"
        assert 0 <= document["audit_witnessed_age"] < 5
        assert document["audit_witnesses_failing"] == 1
        # The agents' listener is unauthenticated: no witness URL, name or log size in it.
        assert "audit_witnessed_size" not in document and "audit_witness_quorum" not in document
        assert "example.test/w" not in json.dumps(document) and "w.example" not in json.dumps(
            document
        )
        await gateway.aclose()

    anyio.run(scenario)


def test_cli_verify_requires_the_witness_quorum(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from agentguard.cli import main

    w1, w2 = FakeWitness("w.example/1"), FakeWitness("w.example/2")
    path, directory = tmp_path / "audit.db", tmp_path / "checkpoints"

    async def history() -> None:
        async with SQLiteStore(path) as store:
            sink = DirectoryCheckpointSink(directory)
            checkpointer = Checkpointer(store, LOG, ORIGIN, sink, witnesses=[client_for(w1)])
            await grown(store, 4)  # type: ignore[arg-type]
            assert checkpointer.witnesses is not None
            await checkpointer.witnesses.witness(await checkpointer.checkpoint())

    anyio.run(history)
    base = ["audit", "verify", "--store", f"sqlite:///{path}", "--checkpoints", str(directory)]
    base += ["--vkey", LOG.vkey(), "--origin", ORIGIN]
    capsys.readouterr()
    assert main([*base, "--witness", w1.vkey()]) == 0
    assert (
        "cosigned by 1 of 1 given witness(es), 1 required: w.example/1" in capsys.readouterr().out
    )
    assert (
        main([*base, "--witness", w1.vkey(), "--witness", w2.vkey(), "--quorum", "2", "--json"])
        == 1
    )
    document = json.loads(capsys.readouterr().out)
    assert document["ok"] is False and document["first"]["category"] == "UNWITNESSED"
    assert "carries 1 valid cosignature(s)" in document["first"]["detail"]
    assert document["witness"]["cosigned_by"] == ["w.example/1"]
    assert document["witness"]["quorum"] == 2
    assert main([*base, "--quorum", "1"]) == 2  # a quorum of no witnesses
    assert main([*base, "--witness", w1.vkey(), "--quorum", "2"]) == 2
    assert main([*base, "--witness", LOG.vkey()]) == 2  # a log key is not a witness key
    assert "--witness" in capsys.readouterr().err
