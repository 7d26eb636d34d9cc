"""The hash chain's contract, checked against oracles that share no code with it.

Leaf hashes are recomputed with ``hashlib`` (RFC 6962: SHA-256 over 0x00 and the leaf bytes),
canonical bytes come from the ``rfc8785`` package or are written out by hand, and every kind of
tampering must be reported as the exact :class:`ChainBreak` (seq and problem) it causes.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import itertools
import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from agentguard.audit import (
    Action,
    AuditEntry,
    AuditEvent,
    ChainBreak,
    Decision,
    leaf_hash,
    verify_chain,
)
from agentguard.audit._chain import GENESIS_PREV, seal

EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)

MODIFIED = "modified: stored hash does not match the body"
MALFORMED = "malformed: body is not a JSON object"
REORDERED = "reordered: body seq differs from its position"
MISSING = "missing: sequence gap"
LINK = "broken link: prev is not the previous event's hash"

#: An in-place edit of a decoded body (its return value is ignored).
Change = Callable[[dict[str, Any]], object]


def rfc6962_leaf(data: bytes) -> bytes:
    """The oracle: RFC 6962 section 2.1 leaf hash, written out with hashlib."""
    return hashlib.sha256(b"\x00" + data).digest()


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def event(i: int) -> AuditEvent:
    return AuditEvent(
        action=Action.DECISION,
        ts=EPOCH + timedelta(seconds=i),
        decision=Decision.ALLOW if i % 2 else Decision.DENY,
        user_id=f"usr_{i % 3}",
        service="github",
        method="GET",
        path=f"/items/{i}",
        status=200,
        latency_us=100 + i,
        request_id=f"req_{i}",
    )


def chain(events: list[AuditEvent], prev: bytes = GENESIS_PREV, start: int = 0) -> list[AuditEntry]:
    log: list[AuditEntry] = []
    for offset, ev in enumerate(events):
        log.append(seal(ev, start + offset, log[-1].hash if log else prev))
    return log


def forge(seq: int, body: dict[str, Any]) -> AuditEntry:
    """An entry whose hash is honestly recomputed over a (tampered) canonical body."""
    data = rfc8785.dumps(body)
    return AuditEntry(seq, rfc6962_leaf(data), data)


def rewritten(entry: AuditEntry, change: Change) -> AuditEntry:
    body = json.loads(entry.body)
    change(body)
    return forge(entry.seq, body)


# --- hashing and sealing, against fixed vectors ------------------------------------------------


def test_genesis_prev_is_32_zero_bytes() -> None:
    assert GENESIS_PREV == b"\x00" * 32


def test_leaf_hash_of_empty_leaf_is_the_rfc6962_vector() -> None:
    expected = "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    assert leaf_hash(b"").hex() == expected


@settings(max_examples=100)
@given(st.binary(max_size=256))
def test_leaf_hash_is_sha256_of_zero_byte_and_data(data: bytes) -> None:
    assert leaf_hash(data) == rfc6962_leaf(data)


FULL = AuditEvent(
    action=Action.DECISION,
    ts=datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc),
    decision=Decision.DENY,
    reason="insufficient_scope",
    user_id="usr_1",
    workspace_id="ws_1",
    account_id="acc_1",
    key_id="key_1",
    family_id="fam_1",
    service="github",
    method="GET",
    path="/repos/a%2Fb",
    status=403,
    latency_us=1234,
    request_id="req_1",
    instance="api-1",
    detail={"z": -1, "a": "\u00fc"},
)
FULL_BYTES = (
    '{"action":"guard.decision","actor":{"account":"acc_1","family":"fam_1","key_id":"key_1",'
    '"user":"usr_1","workspace":"ws_1"},"decision":"deny","detail":{"a":"\u00fc","z":-1},'
    '"instance":"api-1","latency_us":1234,"method":"GET","path":"/repos/a%2Fb",'
    '"prev":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","reason":"insufficient_scope",'
    '"request_id":"req_1","seq":7,"service":"github","status":403,'
    '"ts":"2026-01-02T03:04:05.678901Z","v":1}'
).encode("utf-8")


def test_seal_stores_the_exact_canonical_bytes_and_their_leaf_hash() -> None:
    entry = seal(FULL, 7, bytes(range(32)))
    assert entry.seq == 7
    assert entry.body == FULL_BYTES
    assert entry.hash == rfc6962_leaf(FULL_BYTES)
    assert entry.event() == json.loads(FULL_BYTES)


def test_first_event_links_to_base64_of_zeros() -> None:
    entry = seal(event(0), 0, GENESIS_PREV)
    assert entry.event()["prev"] == "A" * 43 + "="
    assert entry.event()["seq"] == 0


@settings(max_examples=50)
@given(
    st.integers(min_value=0, max_value=2**53 - 1),
    st.binary(min_size=32, max_size=32),
    st.integers(min_value=0, max_value=50),
)
def test_seal_matches_rfc8785_and_hashlib(seq: int, prev: bytes, i: int) -> None:
    ev = event(i)
    entry = seal(ev, seq, prev)
    expected = rfc8785.dumps(ev.body(seq, b64(prev)))
    assert (entry.seq, entry.body, entry.hash) == (seq, expected, rfc6962_leaf(expected))
    assert entry.event()["prev"] == b64(prev)


def test_entries_and_breaks_are_immutable_values() -> None:
    entry = seal(event(0), 0, GENESIS_PREV)
    broken = ChainBreak(3, MISSING)
    for value, name in ((entry, "hash"), (broken, "seq")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(value, name, b"x")
        assert not hasattr(value, "__dict__")  # slots: no stray attributes either


# --- verify_chain: clean runs ------------------------------------------------------------------


def test_empty_run_is_unbroken() -> None:
    assert verify_chain([]) is None
    assert verify_chain([], prev=b"\x01" * 32) is None


def test_clean_chain_verifies_from_genesis_and_from_any_point() -> None:
    log = chain([event(i) for i in range(8)])
    assert verify_chain(log) is None
    assert verify_chain(iter(log)) is None  # any iterable, read once
    for k in range(1, 8):
        assert verify_chain(log[k:], prev=log[k - 1].hash) is None
        assert verify_chain(log[k:]) == ChainBreak(k, LINK)  # zeros are not its predecessor


def test_each_link_is_the_recomputed_hash_of_the_previous_body() -> None:
    log = chain([event(i) for i in range(4)])
    for before, after in itertools.pairwise(log):
        assert after.event()["prev"] == b64(rfc6962_leaf(before.body))


# --- verify_chain: every kind of break, at its exact seq ---------------------------------------


def test_wrong_stored_hash_is_modified_at_that_seq() -> None:
    log = chain([event(i) for i in range(5)])
    log[2] = AuditEntry(2, rfc6962_leaf(log[2].body + b" "), log[2].body)
    assert verify_chain(log) == ChainBreak(2, MODIFIED)


def test_edited_body_under_old_hash_is_modified_at_that_seq() -> None:
    log = chain([event(i) for i in range(5)])
    log[3] = AuditEntry(3, log[3].hash, log[3].body.replace(b"/items/3", b"/items/9"))
    assert verify_chain(log) == ChainBreak(3, MODIFIED)


@pytest.mark.parametrize(
    "body",
    [b"[]", b'"text"', b"7", b"null", b"{", b"\xff\xfe", b"[" * 100_000],
    ids=["array", "string", "number", "null", "truncated", "bad-utf8", "too-deep"],
)
def test_body_that_is_not_a_json_object_is_malformed_not_a_crash(body: bytes) -> None:
    log = chain([event(i) for i in range(3)])
    log[1] = AuditEntry(1, rfc6962_leaf(body), body)
    assert verify_chain(log) == ChainBreak(1, MALFORMED)


@pytest.mark.parametrize("bad_seq", [b"true", b"1.0", b"1e0", b'"1"', b"null", b"[1]"])
def test_body_seq_must_be_the_exact_integer(bad_seq: bytes) -> None:
    log = chain([event(i) for i in range(3)])
    body = log[1].body.replace(b'"seq":1,', b'"seq":' + bad_seq + b",")
    assert body != log[1].body
    log[1] = AuditEntry(1, rfc6962_leaf(body), body)
    assert verify_chain(log) == ChainBreak(1, REORDERED)


def test_body_without_seq_is_reordered() -> None:
    log = chain([event(i) for i in range(3)])
    log[0] = rewritten(log[0], lambda body: body.pop("seq"))
    assert verify_chain(log) == ChainBreak(0, REORDERED)


def test_seq_column_that_disagrees_with_the_body_is_reordered_at_the_column_value() -> None:
    log = chain([event(i) for i in range(4)])
    log[2] = AuditEntry(9, log[2].hash, log[2].body)
    assert verify_chain(log) == ChainBreak(9, REORDERED)


def test_deleted_middle_entry_is_missing_at_its_seq() -> None:
    log = chain([event(i) for i in range(6)])
    del log[3]
    assert verify_chain(log) == ChainBreak(3, MISSING)


def test_repeated_entry_is_reported_where_the_next_seq_was_due() -> None:
    log = chain([event(i) for i in range(4)])
    log.insert(2, log[1])
    assert verify_chain(log) == ChainBreak(2, MISSING)


def test_swapped_neighbours_are_reported_at_the_first_displaced_seq() -> None:
    log = chain([event(i) for i in range(5)])
    log[1], log[2] = log[2], log[1]
    assert verify_chain(log) == ChainBreak(1, MISSING)


def test_deleted_first_entry_breaks_the_link_to_genesis() -> None:
    log = chain([event(i) for i in range(3)])
    assert verify_chain(log[1:]) == ChainBreak(1, LINK)


def test_run_linked_to_another_predecessor_breaks_at_its_first_entry() -> None:
    log = chain([event(i) for i in range(3)], prev=b"\x07" * 32, start=10)
    assert verify_chain(log, prev=b"\x07" * 32) is None
    assert verify_chain(log, prev=b"\x08" * 32) == ChainBreak(10, LINK)
    assert verify_chain(log) == ChainBreak(10, LINK)


def test_entry_sealed_after_a_forged_predecessor_breaks_the_link() -> None:
    log = chain([event(i) for i in range(4)])
    log[2] = seal(event(2), 2, b"\x09" * 32)
    assert verify_chain(log) == ChainBreak(2, LINK)


def test_only_the_first_of_several_breaks_is_reported() -> None:
    log = chain([event(i) for i in range(8)])
    log[5] = AuditEntry(5, bytes(32), log[5].body)
    del log[2]
    assert verify_chain(log) == ChainBreak(2, MISSING)


def test_the_link_follows_the_recomputed_hash_not_the_stored_column() -> None:
    # A stored hash equal to the body's hash is the only one verify_chain accepts, so following
    # the column or the recomputation must agree; a bad column is caught before it is followed.
    log = chain([event(i) for i in range(3)])
    log[1] = AuditEntry(1, log[2].hash, log[1].body)
    assert verify_chain(log) == ChainBreak(1, MODIFIED)


# --- every field is bound: rewriting any of them (and resealing) breaks the next link ---------

FIELDS: dict[str, Change] = {
    "v": lambda b: b.update(v=2),
    "ts": lambda b: b.update(ts="2030-01-01T00:00:00.000000Z"),
    "instance": lambda b: b.update(instance="api-2"),
    "request_id": lambda b: b.update(request_id="req_x"),
    "actor.user": lambda b: b["actor"].update(user="usr_x"),
    "actor.workspace": lambda b: b["actor"].update(workspace="ws_x"),
    "actor.account": lambda b: b["actor"].update(account="acc_x"),
    "actor.key_id": lambda b: b["actor"].update(key_id="key_x"),
    "actor.family": lambda b: b["actor"].update(family="fam_x"),
    "action": lambda b: b.update(action="key.revoke"),
    "service": lambda b: b.update(service="gitlab"),
    "method": lambda b: b.update(method="DELETE"),
    "path": lambda b: b.update(path="/admin"),
    "decision": lambda b: b.update(decision="allow" if b["decision"] == "deny" else "deny"),
    "reason": lambda b: b.update(reason="tampered"),
    "status": lambda b: b.update(status=500),
    "latency_us": lambda b: b.update(latency_us=1),
    "detail": lambda b: b["detail"].update(extra=True),
    "added key": lambda b: b.update(note="x"),
    "removed key": lambda b: b.pop("reason"),
}


@pytest.mark.parametrize("field", sorted(FIELDS))
def test_rewriting_any_field_breaks_the_next_link(field: str) -> None:
    log = chain([event(i) for i in range(5)])
    log[2] = rewritten(log[2], FIELDS[field])
    assert verify_chain(log[:3]) is None  # a rewritten tail: only a checkpoint shows it
    assert verify_chain(log) == ChainBreak(3, LINK)


def test_rewriting_seq_or_prev_breaks_at_that_entry() -> None:
    log = chain([event(i) for i in range(4)])
    assert verify_chain([*log[:2], rewritten(log[2], lambda b: b.update(seq=3)), log[3]]) == (
        ChainBreak(2, REORDERED)
    )
    other = b64(b"\x01" * 32)
    assert verify_chain([*log[:2], rewritten(log[2], lambda b: b.update(prev=other))]) == (
        ChainBreak(2, LINK)
    )


# --- property: one tampering anywhere is reported exactly where it is ------------------------

events = st.builds(
    AuditEvent,
    action=st.sampled_from(Action),
    ts=st.datetimes(timezones=st.just(timezone.utc)),
    decision=st.none() | st.sampled_from(Decision),
    user_id=st.none() | st.text(max_size=8),
    path=st.none() | st.text(max_size=12),
    status=st.none() | st.integers(100, 599),
    detail=st.dictionaries(st.sampled_from(["a", "b", "c"]), st.integers(-5, 5), max_size=2),
)
KINDS = ["hash", "body", "reseal", "body_seq", "prev", "drop", "swap", "repeat", "start"]


def tamper(log: list[AuditEntry], kind: str, k: int) -> tuple[list[AuditEntry], bytes]:
    """``log`` with one ``kind`` of tampering at index ``k``, and the prev to verify it from."""
    n, out, start = len(log), list(log), GENESIS_PREV
    if kind == "hash":
        out[k] = AuditEntry(k, rfc6962_leaf(log[k].body + b"!"), log[k].body)
    elif kind == "body":
        out[k] = AuditEntry(k, log[k].hash, log[k].body[:-1] + b" }")
    elif kind == "reseal":
        out[k] = rewritten(log[k], lambda b: b.update(path=f"{b['path']}!"))
    elif kind == "body_seq":
        out[k] = rewritten(log[k], lambda b: b.update(seq=k + n))
    elif kind == "prev":
        out[k] = rewritten(log[k], lambda b: b.update(prev=b64(b"\xff" * 32)))
    elif kind == "drop":
        del out[k]
    elif kind == "swap":
        j = k + 1 if k + 1 < n else max(k - 1, 0)
        out[k], out[j] = out[j], out[k]
    elif kind == "repeat":
        out.insert(k, log[k])
    else:
        start = b"\xff" * 32
    return out, start


def expected_break(kind: str, k: int, n: int) -> ChainBreak | None:
    """What the chain must report: computed from the kind of tampering, not from the code."""
    if kind in ("hash", "body"):
        return ChainBreak(k, MODIFIED)
    if kind == "body_seq":
        return ChainBreak(k, REORDERED)
    if kind == "prev":
        return ChainBreak(k, LINK)
    if kind == "start":
        return ChainBreak(0, LINK)
    if kind == "repeat":
        return ChainBreak(k + 1, MISSING)
    if kind == "swap":
        if n == 1:
            return None  # swapped with itself
        first = min(k, k + 1 if k + 1 < n else k - 1)
        return ChainBreak(1, LINK) if first == 0 else ChainBreak(first, MISSING)
    # "reseal" and "drop" change what follows; at the tail nothing follows (truncation).
    if k == n - 1:
        return None
    if kind == "reseal" or k == 0:
        return ChainBreak(k + 1, LINK)
    return ChainBreak(k, MISSING)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(events, min_size=1, max_size=8),
    st.sampled_from(KINDS),
    st.integers(min_value=0),
)
def test_one_tampering_is_reported_exactly_where_it_is(
    evs: list[AuditEvent], kind: str, where: int
) -> None:
    log = chain(evs)
    assert verify_chain(log) is None
    k = where % len(log)
    tampered, start = tamper(log, kind, k)
    assert verify_chain(tampered, prev=start) == expected_break(kind, k, len(log))
