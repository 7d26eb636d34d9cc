"""The streaming verifier gives the whole-log verifier's exact report, however it is fed.

The oracle is the verifier as it was before streaming (``tests/support/verify_oracle.py``):
random logs (template-shaped events and odd ones: escapes, non-ASCII, ``detail`` maps, big
ints), random tampering, random checkpoint sets and archived prefixes, fed whole, in random
pages, as export lines, and from stores in pages.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from unittest.mock import patch

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentguard.audit import (
    Action,
    AuditEntry,
    AuditEvent,
    Checkpoint,
    Ed25519Signer,
    _verify,
    leaf_hash,
    sign_checkpoint,
)
from agentguard.audit._chain import GENESIS_PREV, seal
from agentguard.audit._export import ExportTally, check_manifest, export_log, export_pages
from agentguard.audit._merkle import root
from agentguard.audit._prefix import ArchivedPrefix, extend_prefix
from agentguard.audit._rows import entry_from_row
from agentguard.audit._verify import LogVerifier, VerifyReport, verify_log
from agentguard.audit._verify_store import verify_store
from agentguard.storage import MemoryStore
from tests.support.audit_logs import events as shared_events
from tests.support.verify_oracle import verify_log as oracle

ORIGIN = "audit.example.com/agentguard/stream"
SIGNER = Ed25519Signer.generate(ORIGIN)
VKEYS = [SIGNER.vkey()]
EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)

texts = st.one_of(
    st.sampled_from(["GET", "/a/b", "x y", 'q"uote', "back\\slash", "tab\tnl\n", "é", "\x7f"]),
    st.text(max_size=6),
)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**53) + 1, 2**53 - 1), texts)


def events() -> st.SearchStrategy[AuditEvent]:
    return shared_events(texts)


# Events of the template's shape (the fast path's): a log of them is checked a run at a time.
plain_events = st.builds(
    lambda n, status: AuditEvent(
        action=Action.DECISION, ts=EPOCH, path=f"/{n}", method="GET", status=status
    ),
    st.integers(0, 999),
    st.one_of(st.none(), st.integers(100, 599)),
)


def build(evs: Sequence[AuditEvent]) -> list[AuditEntry]:
    log: list[AuditEntry] = []
    for ev in evs:
        log.append(seal(ev, len(log), log[-1].hash if log else GENESIS_PREV))
    return log


def _rehash(seq: int, body: bytes) -> AuditEntry:
    return AuditEntry(seq=seq, hash=leaf_hash(body), body=body)


TAMPERS = [
    "flip",
    "flip_rehash",
    "delete",
    "duplicate",
    "swap",
    "respace",
    "reorder_keys",
    "seq_column",
    "truncate",
    "not_bytes",
    "float",
    "leading_zero",
    "bad_hash",
    "body_seq",
    "swap_bodies",
    "prev_rehash",
]


def tamper(log: list[AuditEntry], kind: str, at: int) -> list[AuditEntry]:
    if not log:
        return log
    at %= len(log)
    entry = log[at]
    out = list(log)
    if type(entry.body) is not bytes:
        return out
    if kind == "flip":
        out[at] = AuditEntry(entry.seq, entry.hash, entry.body.replace(b'"', b"'", 1))
    elif kind == "flip_rehash":
        out[at] = _rehash(entry.seq, entry.body.replace(b"null", b"true", 1))
    elif kind == "delete":
        del out[at]
    elif kind == "duplicate":
        out.insert(at, entry)
    elif kind == "swap" and at + 1 < len(out):
        out[at], out[at + 1] = out[at + 1], out[at]
    elif kind == "respace":
        out[at] = _rehash(entry.seq, entry.body.replace(b",", b", ", 1))
    elif kind == "reorder_keys":
        try:
            obj = json.loads(entry.body)
        except ValueError:
            return out
        body = json.dumps(dict(reversed(list(obj.items()))), separators=(",", ":")).encode()
        out[at] = _rehash(entry.seq, body)
    elif kind == "seq_column":
        out[at] = AuditEntry(entry.seq + 7, entry.hash, entry.body)
    elif kind == "truncate":
        del out[at:]
    elif kind == "not_bytes":
        out[at] = AuditEntry(entry.seq, entry.hash, entry.body.decode("utf-8"))  # type: ignore[arg-type]
    elif kind == "float":
        out[at] = _rehash(entry.seq, entry.body.replace(b'"v":1', b'"v":1.0'))
    elif kind == "leading_zero":
        out[at] = _rehash(entry.seq, entry.body.replace(b'"v":1', b'"v":01'))
    elif kind == "body_seq":
        found = re.search(rb'"seq":(\d+),', entry.body)
        if found is not None:
            seq = int(found[1])
            old, new = b'"seq":%d,' % seq, b'"seq":%d,' % (seq + 1)
            out[at] = _rehash(entry.seq, entry.body.replace(old, new))
    elif kind == "swap_bodies" and at + 1 < len(out):
        other = out[at + 1]
        out[at] = AuditEntry(entry.seq, other.hash, other.body)
        out[at + 1] = AuditEntry(other.seq, entry.hash, entry.body)
    elif kind == "prev_rehash":
        out[at] = _rehash(entry.seq, entry.body.replace(b'"prev":"', b'"prev":"A', 1))
    elif kind == "bad_hash":
        out[at] = AuditEntry(entry.seq, entry.hash[:31], entry.body)
    return out


def notes_for(log: Sequence[AuditEntry], sizes: Sequence[int]) -> list[str]:
    # A tampered entry's stored hash may not even be 32 bytes: a forger signs over something.
    leaves = [e.hash if len(e.hash) == 32 else hashlib.sha256(e.hash).digest() for e in log]
    return [sign_checkpoint(Checkpoint(ORIGIN, s, root(leaves[:s])), [SIGNER]) for s in sizes]


def fed_in_pages(
    entries: Sequence[AuditEntry],
    cuts: Sequence[int],
    notes: list[str],
    prefix: ArchivedPrefix | None,
) -> VerifyReport:
    verifier = LogVerifier(notes, VKEYS, origin=ORIGIN, prefix=prefix)
    last = 0
    for cut in sorted({min(c, len(entries)) for c in cuts}):
        verifier.feed(iter(entries[last:cut]))
        last = cut
    verifier.feed(entries[last:])
    return verifier.finish()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    evs=st.lists(events(), min_size=0, max_size=12),
    tampers=st.lists(st.tuples(st.sampled_from(TAMPERS), st.integers(0, 50)), max_size=3),
    sizes=st.lists(st.integers(0, 14), max_size=4),
    forged=st.lists(st.integers(0, 14), max_size=2),
    cuts=st.lists(st.integers(0, 14), max_size=4),
    archived=st.integers(0, 6),
)
def test_streaming_report_equals_whole_log_report(  # noqa: PLR0917
    evs: list[AuditEvent],
    tampers: list[tuple[str, int]],
    sizes: list[int],
    forged: list[int],
    cuts: list[int],
    archived: int,
) -> None:
    original = build(evs)
    notes = notes_for(original, [s for s in sizes if s <= len(original)])
    log = original
    for kind, at in tampers:
        log = tamper(log, kind, at)
    notes += notes_for(log, [s for s in forged if s <= len(log)])
    prefix = None
    if 0 < archived < len(original) and log[:archived] == original[:archived]:
        leaves = [e.hash for e in original[:archived]]
        prefix = extend_prefix(None, leaves, archived, [s for s in sizes if s <= len(original)])
        log = log[archived:]
    expected = oracle(log, notes, VKEYS, origin=ORIGIN, prefix=prefix)
    assert verify_log(log, notes, VKEYS, origin=ORIGIN, prefix=prefix) == expected
    assert fed_in_pages(log, cuts, notes, prefix) == expected
    if all(type(e.body) is bytes and e.hash == leaf_hash(e.body) for e in log):
        # As export lines: positions come from the line order, hashes from the bytes.
        first = 0 if prefix is None else prefix.size
        as_lines = [_rehash(first + i, e.body) for i, e in enumerate(log)]
        verifier = LogVerifier(notes, VKEYS, origin=ORIGIN, prefix=prefix)
        verifier.feed_bodies([e.body for e in log])
        assert verifier.finish() == oracle(as_lines, notes, VKEYS, origin=ORIGIN, prefix=prefix)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    evs=st.one_of(
        st.lists(plain_events, max_size=12),
        st.lists(st.one_of(plain_events, events()), max_size=12),
    ),
    tampers=st.lists(st.tuples(st.sampled_from(TAMPERS), st.integers(0, 50)), max_size=3),
    sizes=st.lists(st.integers(0, 14), max_size=4),
    cuts=st.lists(st.integers(0, 14), max_size=4),
    archived=st.integers(0, 6),
    run=st.sampled_from([1, 2, 3, 256]),
    retyped=st.lists(st.tuples(st.integers(0, 50), st.integers(0, 2), st.integers(0, 3))),
)
def test_rows_verify_as_the_entries_read_converts_them_to(  # noqa: PLR0917
    evs: list[AuditEvent],
    tampers: list[tuple[str, int]],
    sizes: list[int],
    cuts: list[int],
    archived: int,
    run: int,
    retyped: list[tuple[int, int, int]],
) -> None:
    """``feed_rows`` (runs of rows at once) gives the report of ``feed`` over ``entry_from_row``
    of the same rows, whatever the rows hold: tampered entries, columns of other types."""
    original = build(evs)
    notes = notes_for(original, [s for s in sizes if s <= len(original)])
    log = original
    for kind, at in tampers:
        log = tamper(log, kind, at)
    prefix = None
    if 0 < archived < len(original) and log[:archived] == original[:archived]:
        leaves = [e.hash for e in original[:archived]]
        prefix = extend_prefix(None, leaves, archived, [s for s in sizes if s <= len(original)])
        log = log[archived:]
    rows: list[tuple[object, ...]] = [(e.seq, e.hash, e.body) for e in log]
    kinds: list[Callable[[Any], object]] = [
        lambda v: v,
        lambda v: v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else str(v),
        lambda v: bytearray(v) if isinstance(v, bytes) else v,
        lambda v: float(v) if isinstance(v, int) else v,
    ]
    for at, column, retype in retyped:  # a column rewritten with another type, as SQL allows
        if rows:
            entry = log[at % len(rows)]
            row = list(rows[at % len(rows)])
            row[column] = kinds[retype]((entry.seq, entry.hash, entry.body)[column])
            rows[at % len(rows)] = tuple(row)
    expected = oracle(
        [entry_from_row(row) for row in rows], notes, VKEYS, origin=ORIGIN, prefix=prefix
    )
    verifier = LogVerifier(notes, VKEYS, origin=ORIGIN, prefix=prefix)
    last = 0
    with patch.object(_verify, "_RUN", run):
        for cut in sorted({min(c, len(rows)) for c in cuts}):
            verifier.feed_rows(rows[last:cut])
            last = cut
        verifier.feed_rows(rows[last:])
    assert verifier.finish() == expected


class _PagedStore:
    """A store holding tampered rows by seq, as SQL stores do (gaps possible)."""

    def __init__(self, entries: Sequence[AuditEntry]) -> None:
        self.rows = {e.seq: e for e in entries}
        self.reads = 0

    async def read(self, start: int = 0, stop: int | None = None) -> list[AuditEntry]:
        self.reads += 1
        return [
            self.rows[s] for s in sorted(self.rows) if s >= start and (stop is None or s < stop)
        ]

    async def append(self, events: Sequence[AuditEvent]) -> list[AuditEntry]:
        raise NotImplementedError("read-only test store")

    async def head(self) -> AuditEntry | None:
        return self.rows[max(self.rows)] if self.rows else None


@settings(max_examples=100, deadline=None)
@given(
    n=st.integers(0, 40),
    gone=st.lists(st.integers(0, 40), max_size=6),
    far=st.one_of(st.none(), st.integers(41, 2**40)),
    page=st.integers(1, 9),
)
def test_verify_store_pages_cover_exactly_what_read_returns(
    n: int, gone: list[int], far: int | None, page: int
) -> None:
    log = build([AuditEvent(action=Action.DECISION, ts=EPOCH, path=f"/{i}") for i in range(n)])
    store = _PagedStore(log)
    for seq in gone:
        store.rows.pop(seq, None)
    if far is not None and n:
        store.rows[far] = AuditEntry(far, log[-1].hash, log[-1].body)
    notes = notes_for(log, [n])
    whole = anyio.run(store.read)
    expected = oracle(whole, notes, VKEYS, origin=ORIGIN)
    assert (
        anyio.run(lambda: verify_store(store, notes, VKEYS, origin=ORIGIN, page=page)) == expected
    )
    assert store.reads < 2 * (n // page + 2) + 2 * 45  # a forged far seq costs log2 reads


def test_verify_store_reads_a_memory_store_with_an_archived_prefix() -> None:
    async def run() -> tuple[VerifyReport, VerifyReport]:
        store = MemoryStore()
        log = await store.append([AuditEvent(action=Action.DECISION, ts=EPOCH) for _ in range(30)])
        notes = notes_for(log, [20, 30])
        prefix = extend_prefix(None, [e.hash for e in log[:20]], 20, [20])
        assert await store.drop_prefix(prefix) == 20
        streamed = await verify_store(store, notes, VKEYS, origin=ORIGIN, page=4)
        return streamed, oracle(await store.read(), notes, VKEYS, origin=ORIGIN, prefix=prefix)

    streamed, expected = anyio.run(run)
    assert streamed == expected
    assert streamed.ok and streamed.anchored and streamed.size == 30


def test_export_pages_split_exactly_like_iterating_the_file(tmp_path: Path) -> None:
    data = b'{"a":1}\n\n{"b":2}\nlast-without-newline'
    (tmp_path / "events.jsonl").write_bytes(data)
    tally = ExportTally(5)
    lines = [line for page in export_pages(tmp_path, tally, block=3) for line in page]
    with (tmp_path / "events.jsonl").open("rb") as handle:
        expected = [line.rstrip(b"\n") for line in handle]
    assert lines == expected
    assert (tally.count, tally.last) == (4, b"last-without-newline")


def test_streamed_manifest_check_equals_the_list_check(tmp_path: Path) -> None:
    async def run() -> None:
        store = MemoryStore()
        await store.append([AuditEvent(action=Action.DECISION, ts=EPOCH) for _ in range(9)])
        await export_log(store, tmp_path, origin=ORIGIN)

    anyio.run(run)
    with (tmp_path / "events.jsonl").open("ab") as handle:
        handle.write(b'{"extra":true}\n')
    tally = ExportTally(0)
    lines = [line for page in export_pages(tmp_path, tally) for line in page]
    entries = [_rehash(i, body) for i, body in enumerate(lines)]
    assert check_manifest(tmp_path, tally) == check_manifest(tmp_path, entries)
    assert len(check_manifest(tmp_path, tally)) == 3  # count, last_seq and head all disagree


@pytest.mark.parametrize("detail", [{}, {"a": 1, "b": "x"}])
def test_template_fast_path_and_full_decode_agree_on_a_clean_log(
    detail: dict[str, int | str],
) -> None:
    log = build([AuditEvent(action=Action.KEY_ISSUE, ts=EPOCH, detail=detail) for _ in range(5)])
    report = verify_log(log, notes_for(log, [5]), VKEYS, origin=ORIGIN)
    assert report.ok and report.anchored
    assert report == oracle(log, notes_for(log, [5]), VKEYS, origin=ORIGIN)
