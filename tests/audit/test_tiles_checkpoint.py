"""``GET /log/checkpoint`` under load: a cached note, one sink read per refresh (single flight),
bounded fallback work, absurd size lines, and the ranking of served notes."""

from __future__ import annotations

import base64
import hashlib
import os
import time
from collections.abc import MutableMapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from agentguard.asgi._tile_endpoints import TileEndpoints
from agentguard.audit import Ed25519Signer, sign_checkpoint
from agentguard.audit._checkpoints import Checkpoint, NoteVerifier
from agentguard.audit._cosignatures import WitnessKey
from agentguard.audit._sinks import DirectoryCheckpointSink, MemoryCheckpointSink
from agentguard.audit._tile_checkpoint import newest_served, note_head, served_note
from agentguard.audit._tile_source import TileSource
from agentguard.errors import StoreUnavailable
from agentguard.storage import MemoryStore
from tests.audit.gateway_tiles import tile_gateway
from tests.audit.support import ORIGIN, fill

pytestmark = pytest.mark.anyio

NAME = ORIGIN.split("/", 1)[0]


class CountingSink:
    """A sink that counts how often it is read, optionally slowly or failing."""

    def __init__(self, notes: Sequence[str] = (), delay: float = 0.0, fail: bool = False):
        self.inner = MemoryCheckpointSink()
        self.listed = list(notes)
        self.delay, self.fail = delay, fail
        self.reads = 0

    async def publish(self, size: int, note: str) -> None:
        self.listed.append(note)

    async def notes(self) -> list[str]:
        self.reads += 1
        await anyio.sleep(self.delay)
        if self.fail:
            raise OSError("disk gone")
        return list(self.listed)

    async def newest(self, origin: str) -> list[str]:
        return await self.notes()


async def ask(
    endpoints: TileEndpoints, path: str, operator: Any = None
) -> tuple[int, dict[str, str], bytes]:
    """One request straight to the endpoints: status, headers, body."""
    sent: list[dict[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    scope = {"type": "http", "method": "GET", "path": path, "raw_path": path.encode()}
    parts = path.strip("/").split("/")
    assert await endpoints.handle(scope, send, parts, operator)
    headers = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
    return sent[0]["status"], headers, b"".join(m.get("body", b"") for m in sent[1:])


def signed(size: int, signer: Ed25519Signer, root: bytes = bytes(32)) -> str:
    return sign_checkpoint(Checkpoint(ORIGIN, size, root), [signer])


def endpoints_for(sink: Any, signer: Ed25519Signer, **options: Any) -> TileEndpoints:
    return TileEndpoints(
        TileSource(MemoryStore()),
        access="public",
        sink=sink,
        origin=ORIGIN,
        log_keys=[NoteVerifier.from_vkey(signer.vkey())],
        **options,
    )


async def test_a_checkpoint_flood_reads_a_big_sink_directory_once_per_refresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = MemoryStore()
    gateway, signer = tile_gateway(tmp_path, "hashes", store=store)
    await fill(store, 300)
    assert gateway.checkpointer is not None
    note = await gateway.checkpointer.checkpoint()
    directory = tmp_path / "checkpoints"
    older = signed(299, signer, os.urandom(32))

    def plant(number: int) -> None:  # what months of checkpoints leave behind: older notes
        size = 1 + number % 299
        note_path = directory / f"{size:020d}-{number:08x}.note"
        note_path.write_text(older.replace("\n299\n", f"\n{size}\n"))

    with ThreadPoolExecutor(16) as pool:  # file creation is slow on a loaded machine
        list(pool.map(plant, range(5000)))
    reads = 0
    real_newest, real_notes = DirectoryCheckpointSink.newest, DirectoryCheckpointSink.notes

    async def newest(self: DirectoryCheckpointSink, origin: str) -> list[str]:
        nonlocal reads
        reads += 1
        return await real_newest(self, origin)

    async def notes(self: DirectoryCheckpointSink) -> list[str]:
        nonlocal reads
        reads += 1
        return await real_notes(self)

    monkeypatch.setattr(DirectoryCheckpointSink, "newest", newest)
    monkeypatch.setattr(DirectoryCheckpointSink, "notes", notes)
    assert gateway.operator_app is not None
    operator = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=gateway.operator_app), base_url="http://op"
    )
    agents = httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway.app), base_url="http://gw")
    statuses: list[int] = []
    bodies: set[str] = set()
    probes: list[tuple[int, float]] = []

    async def client() -> None:
        for _ in range(4):
            response = await operator.get("/log/checkpoint")
            statuses.append(response.status_code)
            bodies.add(response.text)

    async def probe() -> None:
        for _ in range(5):
            began = time.perf_counter()
            response = await agents.get("/readyz")
            probes.append((response.status_code, time.perf_counter() - began))
            await anyio.sleep(0.01)

    began = time.monotonic()
    async with operator, agents, anyio.create_task_group() as tasks:
        tasks.start_soon(probe)
        for _ in range(50):
            tasks.start_soon(client)
    elapsed = time.monotonic() - began
    assert statuses == [200] * 200 and bodies == {note}
    assert elapsed < 10, elapsed
    assert reads <= 1 + int(elapsed / 1.0) + 1, (reads, elapsed)  # refresh = 1 s
    assert all(status == 200 and took < 2.0 for status, took in probes), probes


async def test_concurrent_first_requests_share_one_slow_lookup() -> None:
    signer = Ed25519Signer.generate(NAME)
    note = signed(7, signer)
    sink = CountingSink([note], delay=0.2)
    endpoints = endpoints_for(sink, signer, refresh=60.0)
    results: list[tuple[int, bytes]] = []

    async def one() -> None:
        status, _, body = await ask(endpoints, "/log/checkpoint")
        results.append((status, body))

    async with anyio.create_task_group() as tasks:
        for _ in range(50):
            tasks.start_soon(one)
    assert results == [(200, note.encode())] * 50 and sink.reads == 1


async def test_a_refresh_in_flight_serves_the_cached_note_to_others() -> None:
    signer = Ed25519Signer.generate(NAME)
    old, new = signed(7, signer), signed(8, signer)
    sink = CountingSink([old])
    endpoints = endpoints_for(sink, signer, refresh=0.05)
    assert (await ask(endpoints, "/log/checkpoint"))[2] == old.encode()
    sink.listed.append(new)
    sink.delay = 0.3
    seen: list[bytes] = []

    async def one() -> None:
        seen.append((await ask(endpoints, "/log/checkpoint"))[2])

    # The refresh is due after `refresh` or 4x the last read's time, whichever is longer (a
    # loaded machine reads slowly): fire bursts of 20 until one burst carries the refresh.
    deadline = anyio.current_time() + 30
    while sink.reads < 2:
        seen.clear()
        async with anyio.create_task_group() as tasks:
            for _ in range(20):
                tasks.start_soon(one)
        if sink.reads < 2:
            assert seen == [old.encode()] * 20
            assert anyio.current_time() < deadline, "the refresh never came due"
            await anyio.sleep(0.02)
    assert sink.reads == 2  # one refresh for the 20 requests of that burst
    assert seen.count(new.encode()) == 1 and seen.count(old.encode()) == 19


async def test_a_failing_sink_is_503_and_not_retried_on_every_request() -> None:
    signer = Ed25519Signer.generate(NAME)
    sink = CountingSink(fail=True)
    endpoints = endpoints_for(sink, signer, refresh=60.0)
    for _ in range(10):  # the operator listener answers StoreUnavailable with 503
        with pytest.raises(StoreUnavailable) as refused:
            await ask(endpoints, "/log/checkpoint")
        assert refused.value.status == 503 and "disk gone" not in str(refused.value)
    assert sink.reads == 1


async def test_a_failing_sink_keeps_the_note_served_before() -> None:
    signer = Ed25519Signer.generate(NAME)
    note = signed(5, signer)
    sink = CountingSink([note])
    endpoints = endpoints_for(sink, signer, refresh=0.001)
    assert (await ask(endpoints, "/log/checkpoint"))[0] == 200
    sink.fail = True
    deadline = anyio.current_time() + 30  # the refresh waits out 4x a slow read: poll for it
    while sink.reads < 2:
        status, _, body = await ask(endpoints, "/log/checkpoint")
        assert (status, body) == (200, note.encode())
        assert anyio.current_time() < deadline, "the sink was never read again"
        await anyio.sleep(0.005)
    status, _, body = await ask(endpoints, "/log/checkpoint")  # after the failed refresh
    assert (status, body) == (200, note.encode())


async def test_the_in_process_checkpointer_note_is_served_without_reading_the_sink() -> None:
    signer = Ed25519Signer.generate(NAME)
    sink = CountingSink([signed(3, signer)])
    latest: list[str | None] = [None]
    endpoints = endpoints_for(sink, signer, refresh=60.0, published=lambda: latest)
    assert (await ask(endpoints, "/log/checkpoint"))[2] == signed(3, signer).encode()
    assert sink.reads == 1  # nothing published yet: the sink
    served = ""
    for size in (4, 5, 6):
        latest[0] = served = signed(size, signer)
        for _ in range(20):
            assert (await ask(endpoints, "/log/checkpoint"))[2] == served.encode()
    assert sink.reads == 1
    latest[0] = signed(9, Ed25519Signer.generate(NAME))  # untrusted: the last good one stays
    assert (await ask(endpoints, "/log/checkpoint"))[2] == served.encode()


async def test_absurd_size_lines_never_raise_and_the_trusted_note_is_served() -> None:
    signer = Ed25519Signer.generate(NAME)
    note = signed(5, signer)
    huge = f"{ORIGIN}\n{'9' * 5000}\nAAAA\n\n\u2014 {NAME} AAAAAAAA\n"
    wide = f"{ORIGIN}\n{'9' * 21}\nAAAA\n\n\u2014 {NAME} AAAAAAAA\n"
    over = f"{ORIGIN}\n{2**64}\nAAAA\n\n\u2014 {NAME} AAAAAAAA\n"
    for junk in (huge, wide, over):
        assert note_head(junk) is None
        endpoints = endpoints_for(CountingSink([junk, note]), signer)
        assert (await ask(endpoints, "/log/checkpoint"))[2] == note.encode()
    keys = [NoteVerifier.from_vkey(signer.vkey())]
    assert served_note([huge, wide, over, note], ORIGIN, keys) == note
    assert served_note([huge, wide, over, note], ORIGIN, []) == note


@given(
    st.text(alphabet=st.characters(blacklist_characters="\n"), max_size=60),
    st.integers(min_value=0, max_value=5000),
)
@settings(max_examples=200, deadline=None)
def test_note_head_is_bounded_and_never_raises(origin: str, digits: int) -> None:
    size_text = "7" * digits
    head = note_head(f"{origin}\n{size_text}\nrest\n")
    readable = bool(origin) and 0 < digits <= 20 and int(size_text or 0) < 2**64
    assert head == ((origin, int(size_text)) if readable else None)


async def test_fallback_verification_is_bounded_for_a_sink_of_untrusted_notes() -> None:
    signer, stranger = Ed25519Signer.generate(NAME), Ed25519Signer.generate(NAME)
    notes = [signed(size, stranger) for size in range(2, 400)] + [signed(1, signer)]
    keys = [NoteVerifier.from_vkey(signer.vkey())]
    calls = 0
    real = NoteVerifier.verify

    def counting(self: NoteVerifier, message: bytes, signature: bytes) -> bool:
        nonlocal calls
        calls += 1
        return real(self, message, signature)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(NoteVerifier, "verify", counting)
        assert newest_served(notes, ORIGIN, keys, budget=64) is None
        assert calls == 0  # a stranger's key ID matches no trusted key: nothing verified
        assert newest_served(notes[-70:], ORIGIN, keys, budget=80) == notes[-1]


# --- ranking: distinct signers, and no invalid line under a configured witness key ---


class Witness:
    def __init__(self, name: str) -> None:
        self.name, self.key = name, Ed25519PrivateKey.generate()
        public = self.key.public_key().public_bytes_raw()
        self.ident = hashlib.sha256(name.encode() + b"\n\x04" + public).digest()[:4]
        encoded = base64.b64encode(b"\x04" + public).decode()
        self.vkey = WitnessKey.from_vkey(f"{name}+{self.ident.hex()}+{encoded}")

    def line(self, body: Checkpoint, stamp: int = 1_700_000_000, forged: bool = False) -> str:
        message = b"cosignature/v1\ntime %d\n" % stamp + body.body()
        blob = stamp.to_bytes(8, "big") + (bytes(64) if forged else self.key.sign(message))
        return f"\u2014 {self.name} " + base64.b64encode(self.ident + blob).decode() + "\n"


def test_repeated_cosignatures_of_one_witness_count_once() -> None:
    signer = Ed25519Signer.generate(NAME)
    body = Checkpoint(ORIGIN, 5, bytes(32))
    plain = sign_checkpoint(body, [signer])
    one, two = Witness("w1.test"), Witness("w2.test")
    keys, witnesses = [NoteVerifier.from_vkey(signer.vkey())], [one.vkey, two.vkey]
    repeated = plain + one.line(body) * 3
    stamps = plain + one.line(body, 1) + one.line(body, 2) + one.line(body, 3)
    both = plain + one.line(body) + two.line(body)
    for padded in (repeated, stamps):
        assert served_note([padded, both], ORIGIN, keys, witnesses) == both
        assert served_note([both, padded], ORIGIN, keys, witnesses) == both


def test_a_bad_line_under_a_configured_witness_key_ranks_below_a_clean_note() -> None:
    signer = Ed25519Signer.generate(NAME)
    body = Checkpoint(ORIGIN, 5, bytes(32))
    plain = sign_checkpoint(body, [signer])
    one, two = Witness("w1.test"), Witness("w2.test")
    keys, witnesses = [NoteVerifier.from_vkey(signer.vkey())], [one.vkey, two.vkey]
    tainted = plain + one.line(body) + two.line(body, forged=True)
    clean = plain + one.line(body)
    assert served_note([tainted, clean], ORIGIN, keys, witnesses) == clean
    assert served_note([tainted, plain], ORIGIN, keys, witnesses) == plain
    assert served_note([tainted], ORIGIN, keys, witnesses) == tainted  # the only one: served
    older = sign_checkpoint(Checkpoint(ORIGIN, 4, bytes(32)), [signer])
    assert served_note([older, tainted], ORIGIN, keys, witnesses) == tainted  # size first
    stranger = Witness("w3.test")  # not configured: its bad line is ignored
    assert served_note(
        [plain + stranger.line(body, forged=True) + one.line(body), clean], ORIGIN, keys, witnesses
    ) == plain + stranger.line(body, forged=True) + one.line(body)
