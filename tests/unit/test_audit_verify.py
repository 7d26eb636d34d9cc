"""verify_log: a clean log passes; each kind of tampering is named at the first bad seq."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentguard.audit import (
    Action,
    AuditEntry,
    AuditEvent,
    Category,
    Checkpoint,
    Decision,
    Ed25519Signer,
    VerifyReport,
    leaf_hash,
    sign_checkpoint,
    verify_log,
)
from agentguard.audit._chain import GENESIS_PREV, seal
from agentguard.audit._merkle import root
from agentguard.storage import MemoryStore

ORIGIN = "audit.example.com/agentguard/test"
SIGNER = Ed25519Signer.generate(ORIGIN)
VKEYS = [SIGNER.vkey()]
EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)


def event(i: int, path: str = "/items") -> AuditEvent:
    return AuditEvent(
        action=Action.DECISION,
        ts=EPOCH + timedelta(seconds=i),
        decision=Decision.ALLOW if i % 3 else Decision.DENY,
        user_id=f"usr_{i % 5}",
        service="github",
        method="GET",
        path=f"{path}/{i}",
        status=200,
        latency_us=100 + i,
        request_id=f"req_{i}",
    )


def extend(entries: Sequence[AuditEntry], events: Sequence[AuditEvent]) -> list[AuditEntry]:
    log = list(entries)
    for ev in events:
        log.append(seal(ev, len(log), log[-1].hash if log else GENESIS_PREV))
    return log


def build(n: int) -> list[AuditEntry]:
    return extend([], [event(i) for i in range(n)])


def note(entries: Sequence[AuditEntry], size: int, signer: Ed25519Signer = SIGNER) -> str:
    head = Checkpoint(ORIGIN, size, root([e.hash for e in entries[:size]]))
    return sign_checkpoint(head, [signer])


def verify(
    entries: Sequence[AuditEntry], *sizes: int, of: Sequence[AuditEntry] = ()
) -> VerifyReport:
    """Verify ``entries`` against checkpoints signed at ``sizes`` over ``of`` (the original)."""
    original = of or entries
    return verify_log(entries, [note(original, s) for s in sizes], VKEYS)


def first(report: VerifyReport) -> tuple[Category, int | None]:
    assert report.first is not None, report.findings
    assert not report.ok
    return report.first.category, report.first.seq


def reseal(entry: AuditEntry, body: bytes) -> AuditEntry:
    return AuditEntry(entry.seq, leaf_hash(body), body)


def test_clean_checkpointed_log_verifies_and_is_anchored() -> None:
    log = build(20)
    report = verify(log, 5, 20)
    assert report.ok and report.anchored and report.findings == []
    assert report.first is None
    assert report.size == 20 and report.anchored_size == 20
    assert report.root == root([e.hash for e in log])


def test_empty_log_without_checkpoints_is_ok() -> None:
    report = verify_log([])
    assert report.ok and report.anchored and report.size == 0


@pytest.mark.anyio
async def test_log_written_by_memory_store_verifies() -> None:
    store = MemoryStore()
    await store.append([event(0)])
    await store.append([event(i) for i in range(1, 40)])
    entries = await store.read()
    checkpoint = Checkpoint(ORIGIN, 40, root([e.hash for e in entries]))
    report = verify_log(entries, [sign_checkpoint(checkpoint, [SIGNER])], VKEYS, origin=ORIGIN)
    assert report.ok and report.anchored


def test_modified_body_byte_is_modified_at_its_seq() -> None:
    log = build(20)
    body = log[7].body.replace(b'"status":200', b'"status":201')
    log[7] = AuditEntry(7, log[7].hash, body)
    assert first(verify(log, 20)) == (Category.MODIFIED, 7)


def test_modified_and_rehashed_body_is_modified_at_its_seq() -> None:
    log = build(20)
    log[7] = reseal(log[7], log[7].body.replace(b'"status":200', b'"status":201'))
    report = verify(log, 20, of=build(20))
    assert first(report) == (Category.MODIFIED, 7)
    assert Category.FORK in {f.category for f in report.findings}


def test_deleted_entry_is_missing_at_its_seq() -> None:
    log = build(20)
    del log[7]
    assert first(verify(log, 20, of=build(20))) == (Category.MISSING, 7)


def test_inserted_forged_entry_is_inserted_at_its_seq() -> None:
    log = build(20)
    forged = seal(event(99, "/forged"), 7, log[6].hash)
    log.insert(7, forged)
    report = verify(log, 20, of=build(20))
    assert first(report) == (Category.INSERTED, 7)


def test_inserted_entry_with_a_wrong_prev_is_inserted_at_its_seq() -> None:
    log = build(20)
    log.insert(7, seal(event(99, "/forged"), 7, b"\x01" * 32))
    assert first(verify(log, 20, of=build(20))) == (Category.INSERTED, 7)


def test_swapped_entries_are_reordered() -> None:
    log = build(20)
    log[7], log[8] = log[8], log[7]
    assert first(verify(log, 20, of=build(20))) == (Category.REORDERED, 7)


def test_entry_moved_far_ahead_is_reordered() -> None:
    log = build(20)
    log.insert(4, log.pop(9))
    assert first(verify(log, 20, of=build(20))) == (Category.REORDERED, 4)


def test_renumbered_seq_column_is_reordered() -> None:
    log = build(20)
    log[7], log[8] = (
        AuditEntry(7, log[8].hash, log[8].body),
        AuditEntry(8, log[7].hash, log[7].body),
    )
    assert first(verify(log, 20, of=build(20))) == (Category.REORDERED, 7)


def test_reserialised_body_with_equal_meaning_is_non_canonical() -> None:
    log = build(20)
    pretty = json.dumps(json.loads(log[7].body), indent=1).encode()
    log[7] = AuditEntry(7, log[7].hash, pretty)
    report = verify(log, 20)
    assert first(report) == (Category.NON_CANONICAL, 7)
    assert len([f for f in report.findings if not f.warning]) == 1


def test_non_canonical_bytes_hashed_as_stored_are_non_canonical() -> None:
    log = build(20)
    log[7] = reseal(log[7], json.dumps(json.loads(log[7].body), ensure_ascii=True).encode() + b" ")
    assert first(verify(log, 20)) == (Category.NON_CANONICAL, 7)


def test_truncated_below_a_signed_checkpoint_is_reported() -> None:
    log = build(20)
    report = verify(log[:15], 10, 20, of=log)
    assert first(report) == (Category.TRUNCATED, 15)
    assert report.anchored_size == 10


def test_rollback_and_append_is_a_fork() -> None:
    log = build(20)
    forked = extend(log[:12], [event(i, "/other") for i in range(12, 25)])
    report = verify(forked, 10, 20, of=log)
    assert first(report) == (Category.FORK, 10)
    assert report.anchored_size == 10


def test_two_signed_roots_for_one_size_are_a_fork() -> None:
    log, other = build(20), extend(build(12), [event(i, "/other") for i in range(12, 20)])
    report = verify_log(log, [note(log, 20), note(other, 20)], VKEYS)
    assert first(report)[0] is Category.FORK


def test_bad_checkpoint_signature_is_reported() -> None:
    log = build(20)
    tampered = note(log, 20).replace("\n20\n", "\n21\n")
    report = verify_log(log, [tampered], VKEYS)
    assert first(report) == (Category.BAD_SIGNATURE, None)
    assert not report.anchored


def test_checkpoint_by_an_untrusted_key_is_a_bad_signature() -> None:
    log = build(20)
    report = verify_log(log, [note(log, 20, Ed25519Signer.generate(ORIGIN))], VKEYS)
    assert first(report) == (Category.BAD_SIGNATURE, None)


def test_checkpoint_for_another_origin_is_rejected() -> None:
    log = build(5)
    report = verify_log(log, [note(log, 5)], VKEYS, origin="other.example/log")
    assert first(report) == (Category.BAD_SIGNATURE, None)


def test_events_after_the_newest_checkpoint_are_an_unanchored_tail() -> None:
    log = build(20)
    report = verify(log, 10)
    assert report.ok and not report.anchored and report.first is None
    [finding] = report.findings
    assert (finding.category, finding.seq) == (Category.UNANCHORED_TAIL, 10)
    assert finding.line().startswith("WARN seq=10 UNANCHORED-TAIL")


def test_log_without_any_checkpoint_is_unanchored_from_zero() -> None:
    report = verify_log(build(3))
    assert report.ok and not report.anchored
    assert [(f.category, f.seq) for f in report.findings] == [(Category.UNANCHORED_TAIL, 0)]


def test_signed_notes_without_vkeys_are_a_configuration_error() -> None:
    log = build(3)
    with pytest.raises(ValueError, match="vkeys"):
        verify_log(log, [note(log, 3)])


def test_report_renders_lines_and_json() -> None:
    log = build(5)
    log[2] = AuditEntry(2, log[2].hash, log[2].body + b" ")
    report = verify_log(log)
    assert report.first is not None
    assert report.first.line().startswith("FAIL seq=2 NON-CANONICAL")
    data = report.to_dict()
    json.dumps(data)
    assert data["ok"] is False


def test_trusted_checkpoint_values_need_no_vkeys() -> None:
    log = build(8)
    report = verify_log(log, [Checkpoint(ORIGIN, 8, root([e.hash for e in log]))])
    assert report.ok and report.anchored


junk_bodies = st.one_of(
    st.binary(max_size=80),
    st.sampled_from([e.body for e in build(4)]),
    st.builds(
        lambda seq, prev: json.dumps({"seq": seq, "prev": prev}).encode(),
        st.one_of(st.integers(-3, 10), st.booleans(), st.none(), st.floats()),
        st.one_of(st.text(max_size=8), st.none()),
    ),
    st.just(b'{"seq": 1.0e400, "prev": NaN}'),
    st.just(b"[" * 5000),
)
junk_entries = st.builds(
    AuditEntry,
    seq=st.integers(-3, 12),
    hash=st.one_of(st.binary(max_size=40), st.sampled_from([e.hash for e in build(4)])),
    body=junk_bodies,
)


@settings(max_examples=300)
@given(st.lists(junk_entries, max_size=12))
def test_verify_never_raises_on_junk(entries: list[AuditEntry]) -> None:
    report = verify_log(entries, [Checkpoint(ORIGIN, 3, bytes(32))])
    assert report.size == len(entries)
    assert report.ok is (not [f for f in report.findings if not f.warning])


@settings(max_examples=200)
@given(st.data())
def test_any_single_tampering_of_a_checkpointed_log_fails(data: st.DataObject) -> None:
    log = build(12)
    original = list(log)
    i = data.draw(st.integers(0, 11))
    kind = data.draw(st.sampled_from(["delete", "duplicate", "swap", "flip", "truncate"]))
    if kind == "delete":
        del log[i]
    elif kind == "duplicate":
        log.insert(i, log[i])
    elif kind == "swap":
        j = data.draw(st.integers(0, 11).filter(lambda j: j != i))
        log[i], log[j] = log[j], log[i]
    elif kind == "flip":
        position = data.draw(st.integers(0, len(log[i].body) - 1))
        body = bytearray(log[i].body)
        body[position] ^= data.draw(st.integers(1, 255))
        log[i] = AuditEntry(i, log[i].hash, bytes(body))
    else:
        log = log[:i]
    report = verify(log, 12, of=original)
    assert not report.ok
    assert report.first is not None and report.first.seq is not None
    assert report.first.seq <= i
