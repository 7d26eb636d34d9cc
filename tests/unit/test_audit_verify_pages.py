"""Pages computed ahead (``audit verify --jobs``): the same verdict as reading them in order.

A worker runs the fast path over a page with the stored hash of the row before it as the
chain head (``page_leaves``); the verifier takes the result only when its own state allows
(``LogVerifier.take_page``), appending the page's leaves or, for a whole aligned page, the
root of their subtree (``CompactRange.push_subtree``). The oracle: the same rows fed page by
page with ``feed_rows``, over generated logs with generated tampering and signed sizes.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentguard.audit import (
    Action,
    AuditEvent,
    Checkpoint,
    Decision,
    Ed25519Signer,
    sign_checkpoint,
)
from agentguard.audit import _verify_store as verify_store_module
from agentguard.audit._chain import GENESIS_PREV, seal
from agentguard.audit._merkle import CompactRange, perfect_root, root
from agentguard.audit._verify import LogVerifier
from agentguard.audit._verify_store import auto_jobs, page_leaves
from tests.support.audit_logs import EPOCH

ORIGIN = "audit.test/pages"
SIGNER = Ed25519Signer.generate(ORIGIN)
VKEYS = [SIGNER.vkey()]
HASHES = st.binary(min_size=32, max_size=32)
KINDS = ["none", "body", "body_rehashed", "hash", "hash_as_text", "deleted", "swapped"]

Row = tuple[object, object, object]


def log(size: int) -> list[Row]:
    """``size`` sealed decisions as stored rows ``(seq, hash, body)``; now and then a body
    the template does not take (a non-ASCII path, a detail)."""
    rows: list[Row] = []
    prev = GENESIS_PREV
    for seq in range(size):
        event = AuditEvent(
            action=Action.DECISION,
            ts=EPOCH + timedelta(microseconds=seq),
            decision=Decision.ALLOW if seq % 7 else Decision.DENY,
            method="GET",
            path=f"/crm/contacts/{seq}" + ("/é" if seq % 29 == 11 else ""),
            status=200,
            detail={"n": seq} if seq % 31 == 17 else {},
        )
        entry = seal(event, seq, prev)
        rows.append((entry.seq, entry.hash, entry.body))
        prev = entry.hash
    return rows


def notes(rows: list[Row], sizes: list[int]) -> list[str]:
    leaves = [row[1] for row in rows]
    signed = []
    for size in sizes:
        tree = root(leaves[:size])  # type: ignore[arg-type]
        signed.append(sign_checkpoint(Checkpoint(ORIGIN, size, tree), [SIGNER]))
    return signed


def tamper(rows: list[Row], kind: str, at: int) -> list[Row]:
    rows = list(rows)
    seq, hash_, body = rows[at]
    assert isinstance(body, bytes) and isinstance(hash_, bytes)
    if kind == "body":
        rows[at] = (seq, hash_, body.replace(b'"GET"', b'"PUT"'))
    elif kind == "body_rehashed":
        changed = body.replace(b'"GET"', b'"PUT"')
        rows[at] = (seq, hashlib.sha256(b"\x00" + changed).digest(), changed)
    elif kind == "hash":
        rows[at] = (seq, hashlib.sha256(b"forged").digest(), body)
    elif kind == "hash_as_text":
        rows[at] = (seq, hash_.hex(), body)
    elif kind == "deleted":
        del rows[at]
    elif kind == "swapped" and at + 1 < len(rows):
        rows[at], rows[at + 1] = (seq, *rows[at + 1][1:]), (rows[at + 1][0], hash_, body)
    return rows


def read(rows: list[Row], start: int, stop: int) -> list[Row]:
    """What ``read_rows(start, stop)`` gives over ``rows`` (sorted by seq)."""
    return [row for row in rows if isinstance(row[0], int) and start <= row[0] < stop]


def both(rows: list[Row], signed: list[str], page: int, size: int) -> tuple[object, object, int]:
    """The report fed page by page, the report with pages computed ahead, and how many pages
    were taken from the workers' results."""
    plain = LogVerifier(signed, VKEYS, origin=ORIGIN)
    ahead = LogVerifier(signed, VKEYS, origin=ORIGIN)
    taken = 0
    for start in range(0, size + page, page):
        rows_here = read(rows, start, start + page)
        if rows_here:
            plain.feed_rows(rows_here)
        result = page_leaves(read(rows, max(start - 1, 0), start + page), start, start + page)
        if ahead.take_page(result):
            taken += 1
        elif rows_here:
            ahead.feed_rows(rows_here)
    return plain.finish(), ahead.finish(), taken


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(1, 90),
    page=st.sampled_from([1, 2, 4, 8, 16, 5, 12]),
    kind=st.sampled_from(KINDS),
    where=st.floats(0, 1, exclude_max=True),
    fractions=st.lists(st.floats(0, 1), max_size=3),
)
def test_pages_computed_ahead_give_the_report_of_pages_fed_in_order(
    size: int, page: int, kind: str, where: float, fractions: list[float]
) -> None:
    pristine = log(size)
    sizes = sorted({int(fraction * size) for fraction in fractions} | {size})
    signed = notes(pristine, sizes)
    rows = pristine if kind == "none" else tamper(pristine, kind, int(where * size))
    plain, ahead, taken = both(rows, signed, page, size)
    assert ahead == plain
    if kind == "none" and size >= 2 * page:
        assert plain.ok  # type: ignore[attr-defined]
        assert taken >= 1  # the fast lane was used, not only the fallback


def test_a_whole_log_is_taken_page_by_page_as_subtrees() -> None:
    rows = log(64)
    signed = notes(rows, [16, 40, 64])  # 16 and 64 at page ends, 40 inside a page
    plain, ahead, taken = both(rows, signed, 8, 64)
    assert ahead == plain and plain.ok and plain.anchored  # type: ignore[attr-defined]
    assert taken == 6  # all but the two pages with a non-ASCII path (seq 11 and 40)


def test_a_page_starting_after_a_missing_row_is_not_taken() -> None:
    rows = log(24)
    del rows[7]
    result = page_leaves(read(rows, 7, 16), 8, 16)
    assert result.prev is None and result.leaves is None
    verifier = LogVerifier()
    verifier.feed_rows(read(rows, 0, 8))
    assert not verifier.take_page(result)


def test_a_partial_last_page_carries_leaves_but_no_subtree() -> None:
    rows = log(20)
    result = page_leaves(read(rows, 15, 24), 16, 24)
    assert result.rows == 4 and result.root is None
    assert result.split() == [row[1] for row in rows[16:]]


@settings(max_examples=80, deadline=None)
@given(
    blocks=st.integers(0, 6),
    level=st.integers(0, 5),
    extra=st.lists(HASHES, max_size=3),
    data=st.data(),
)
def test_a_pushed_subtree_is_the_tree_extend_builds(
    blocks: int, level: int, extra: list[bytes], data: st.DataObject
) -> None:
    count = 1 << level
    before = data.draw(st.lists(HASHES, min_size=blocks * count, max_size=blocks * count))
    leaves = data.draw(st.lists(HASHES, min_size=count, max_size=count))
    extended, pushed = CompactRange(), CompactRange()
    extended.extend(before + leaves + extra)
    pushed.extend(before)
    pushed.push_subtree(perfect_root(leaves), count)
    pushed.extend(extra)
    assert (pushed.size, pushed.peaks, pushed.root()) == (
        extended.size,
        extended.peaks,
        extended.root(),
    )


@pytest.mark.parametrize(("size", "count"), [(0, 3), (0, 0), (4, 8), (6, 4), (3, 2)])
def test_a_subtree_that_cannot_follow_is_refused(size: int, count: int) -> None:
    compact = CompactRange()
    compact.extend([bytes(32)] * size)
    with pytest.raises(ValueError, match="cannot follow"):
        compact.push_subtree(bytes(32), count)
    assert compact.size == size


def test_a_subtree_root_is_a_hash() -> None:
    with pytest.raises(ValueError, match="32-byte"):
        CompactRange().push_subtree(b"short", 1)


@given(st.lists(HASHES, min_size=1, max_size=70))
def test_perfect_root_is_the_tree_hash_of_a_power_of_two_of_leaves(leaves: list[bytes]) -> None:
    count = len(leaves)
    if count & (count - 1):
        with pytest.raises(ValueError, match="perfect subtree"):
            perfect_root(leaves)
    else:
        assert perfect_root(leaves) == root(leaves)


def test_auto_jobs_uses_workers_only_for_large_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verify_store_module, "_usable_cpus", lambda: 8)
    assert auto_jobs(1000) == 1
    assert auto_jobs(199_999) == 1
    assert auto_jobs(200_000) == 4  # at most 4
    monkeypatch.setattr(verify_store_module, "_usable_cpus", lambda: 1)
    assert auto_jobs(10**7) == 1


def test_usable_cpus_are_those_the_process_may_run_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 3}, raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert verify_store_module._usable_cpus() == 2
    monkeypatch.delattr("os.sched_getaffinity", raising=False)
    assert verify_store_module._usable_cpus() == 16
    monkeypatch.setattr("os.cpu_count", lambda: None)
    assert verify_store_module._usable_cpus() == 1


def test_a_page_is_not_taken_while_a_finding_is_suspect() -> None:
    """A missing entry whose successor names another prev leaves the verifier suspect for a
    while (the entry may turn up later): the next page is read and fed, even though it
    continues the stored chain."""
    rows = tamper(log(24), "deleted", 7)
    verifier = LogVerifier()
    verifier.feed_rows(read(rows, 0, 16))
    assert not verifier._clean
    result = page_leaves(read(rows, 15, 24), 16, 24)
    assert result.leaves is not None and result.prev == verifier._head
    assert not verifier.take_page(result)


def test_a_page_computed_from_another_head_is_not_taken() -> None:
    """A worker that read another row before the page (the log changed under it) started
    from a head the verifier does not hold."""
    rows = log(24)
    verifier = LogVerifier()
    verifier.feed_rows(read(rows, 0, 16))
    result = page_leaves(read(rows, 15, 24), 16, 24)
    assert result.root is not None
    forged = type(result)(result.start, bytes(32), result.leaves, result.rows, result.root)
    assert not verifier.take_page(forged)
    assert verifier.take_page(result)
    assert verifier.position == 24
