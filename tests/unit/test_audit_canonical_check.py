"""The verifier's template fast path gives the full decode/re-encode verdict on any body.

``canonical_link`` checks bodies of the event schema with a compiled template and any other
body with a full JSON decode and re-encode; ``template_leaves`` checks a run of entries at once.
Generated bodies (events with quotes, backslashes, control bytes, DEL and non-ASCII in their
strings and details), then mutated byte by byte, must get the verdict of the full path.
"""

from __future__ import annotations

import hashlib
from binascii import b2a_base64
from datetime import datetime, timezone

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from agentguard.audit import Action, AuditEntry, AuditEvent
from agentguard.audit._canonical_check import _template, canonical_link, template_leaves
from agentguard.audit._chain import GENESIS_PREV, seal
from agentguard.audit._rows import blob, entry_from_row, exact_columns
from agentguard.audit._verify import Category, LogVerifier, verify_log
from tests.support.audit_logs import events as shared_events
from tests.support.verify_oracle import _decode, _encode

EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)


def full_path(body: bytes, head_b64: bytes, seq: int) -> bool:
    """The reference: ASCII (as the verifier requires), its own canonical encoding, linked."""
    if not body.isascii():
        return False
    try:
        obj = _decode(body.decode())
    except (ValueError, RecursionError):
        return False
    # surrogatepass: a lone surrogate (from a \ud800 escape) encodes, to bytes no body equals
    if type(obj) is not dict or _encode(obj).encode("utf-8", "surrogatepass") != body:
        return False
    return (
        obj.get("prev") == head_b64.decode() and type(obj.get("seq")) is int and obj["seq"] == seq
    )


def b64(digest: bytes) -> bytes:
    return b2a_base64(digest, newline=False)


def leaf(body: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + body).digest()


# Mostly strings the template takes (printable ASCII, no quote or backslash), so that whole
# runs of entries reach it; the rest need an escape, are DEL, control or non-ASCII text.
safe_texts = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters='"\\')
)
unsafe_texts = st.one_of(
    st.sampled_from(['q"uote', "back\\slash", "tab\tnl\n", "é", "\x7f", "\x00", "\u2028", "{}"]),
    st.text(st.characters(max_codepoint=0x7F), max_size=6),
    st.text(st.characters(exclude_categories=["Cs"]), max_size=4),
)
texts = st.one_of(safe_texts, safe_texts, safe_texts, unsafe_texts)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**53) + 1, 2**53 - 1), texts)


def events(texts: st.SearchStrategy[str] = texts) -> st.SearchStrategy[AuditEvent]:
    return shared_events(texts)


# What a forger or a broken writer might splice in: quotes, escapes (canonical or not), control
# bytes, DEL, non-ASCII, JSON punctuation and values the template must not take for canonical.
PIECES = [
    b'"', b"\\", b'\\"', b"\\\\", b"\\n", b"\\t", b"\\u00e9", b"\\u0041", b"\\u007f", b"\\/",
    b"\x00", b"\x1f", b"\n", b"\x7f", b"\xc3\xa9", b"\xff", b" ", b"{", b"}", b"{}", b",", b":",
    b"0", b"-", b"1.0", b"01", b"null", b"true", b"[1]", b'"x":1', b"9007199254740993",
    b"\\ud800", b"\\udead", b"\\udc00", b"\\ud83d\\ude00",
]  # fmt: skip


@st.composite
def mutated(draw: st.DrawFn, body: bytes) -> bytes:
    for _ in range(draw(st.integers(0, 2))):
        quotes = [i + 1 for i, byte in enumerate(body) if byte == ord('"')]
        # Anywhere, or just inside a string (after a quote): where an escape hides best.
        at = draw(st.one_of(st.integers(0, len(body)), st.sampled_from(quotes or [0])))
        action = draw(st.sampled_from(["insert", "replace", "delete"]))
        piece = draw(st.sampled_from(PIECES))
        if action == "insert":
            body = body[:at] + piece + body[at:]
        elif action == "replace":
            body = body[:at] + piece + body[at + 1 :]
        else:
            body = body[:at] + body[at + 1 :]
    return body


def canonical(event: AuditEvent, seq: int, head: bytes) -> bytes | None:
    try:
        return event.canonical(seq, b64(head).decode())
    except ValueError:  # outside the schema (an unsafe int in detail)
        return None


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    event=events(),
    seq=st.integers(0, 10**15 + 10),
    head=st.binary(min_size=32, max_size=32),
    other=st.sampled_from(["same", "other head", "other seq"]),
    data=st.data(),
)
def test_template_verdict_equals_the_full_decode_verdict(
    event: AuditEvent, seq: int, head: bytes, other: str, data: st.DataObject
) -> None:
    body = canonical(event, seq, head)
    assume(body is not None)
    assert body is not None
    body = data.draw(mutated(body))
    head_b64 = b64(head if other != "other head" else hashlib.sha256(head).digest())
    asked = seq + 1 if other == "other seq" else seq
    assert canonical_link(body, head_b64, asked) == full_path(body, head_b64, asked)


def test_template_takes_the_fast_branch_for_typical_and_escaped_details() -> None:
    head = bytes(32)
    for detail in ({}, {"a": "x\ny", "b": 'q"'}, {"z_1": "\x7f"}):
        event = AuditEvent(action=Action.DECISION, ts=EPOCH, path="/a", detail=detail)
        body = event.canonical(7, b64(head).decode())
        assert _template(body) is not None
        assert canonical_link(body, b64(head), 7) and full_path(body, b64(head), 7)
    # A string needing an escape outside detail, raw DEL, non-ASCII: the full path decides.
    for path in ('q"', "\x7f", "é"):
        body = AuditEvent(action=Action.DECISION, ts=EPOCH, path=path).canonical(7, "AA==")
        assert _template(body) is None
        assert canonical_link(body, b"AA==", 7) == full_path(body, b"AA==", 7)


TAMPERS = ["bytes", "bytes_rehash", "hash", "prev", "seq", "swap"]


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    evs=st.lists(
        st.one_of(events(safe_texts), events(safe_texts), events()), min_size=1, max_size=5
    ),
    head=st.binary(min_size=32, max_size=32),
    first=st.integers(0, 10**6),
    tampered=st.lists(st.tuples(st.sampled_from(TAMPERS), st.integers(0, 4)), max_size=2),
    data=st.data(),
)
def test_a_run_passes_exactly_when_each_entry_takes_the_template_fast_path(
    evs: list[AuditEvent],
    head: bytes,
    first: int,
    tampered: list[tuple[str, int]],
    data: st.DataObject,
) -> None:
    bodies: list[bytes] = []
    prev = head
    for n, event in enumerate(evs):
        body = canonical(event, first + n, prev)
        assume(body is not None)
        assert body is not None
        bodies.append(body)
        prev = leaf(body)
    hashes = [leaf(body) for body in bodies]
    for kind, where in tampered:
        at = where % len(bodies)
        if kind.startswith("bytes"):
            bodies[at] = data.draw(mutated(bodies[at]))
        elif kind == "hash":
            hashes[at] = hashlib.sha256(hashes[at]).digest()
        elif kind == "prev":  # sealed again: a well-formed body, linked to another hash
            resealed = canonical(evs[at], first + at, hashlib.sha256(b"forged").digest())
            assume(resealed is not None)
            assert resealed is not None
            bodies[at] = resealed
        elif kind == "seq":  # the run sealed again from ``at`` on, one seq further
            prev = hashes[at - 1] if at else head
            for n in range(at, len(bodies)):
                resealed = canonical(evs[n], first + n + 1, prev)
                assume(resealed is not None)
                assert resealed is not None
                bodies[n], hashes[n] = resealed, leaf(resealed)
                prev = hashes[n]
        elif kind == "swap" and at + 1 < len(bodies):
            bodies[at], bodies[at + 1] = bodies[at + 1], bodies[at]
            hashes[at], hashes[at + 1] = hashes[at + 1], hashes[at]
        if kind in {"bytes_rehash", "prev"}:
            hashes[at] = leaf(bodies[at])
    expected: list[bytes] | None = []
    link = head
    for n, (body, stored) in enumerate(zip(bodies, hashes, strict=True)):
        digest = leaf(body)
        fast = _template(body) is not None and canonical_link(body, b64(link), first + n)
        if digest != stored or not fast:
            expected = None
            break
        assert expected is not None
        expected.append(digest)
        link = digest
    assert template_leaves(bodies, hashes, first, head) == expected


def test_exact_columns_only_for_rows_entry_from_row_leaves_alone() -> None:
    good = [(0, b"h", b"b"), (1, b"i", b"c")]
    columns = exact_columns(good)
    assert columns == ((0, 1), (b"h", b"i"), (b"b", b"c"))
    assert [entry_from_row(row) for row in good] == [
        entry_from_row((s, h, b)) for s, h, b in zip(*columns, strict=True)
    ]
    for odd in (
        [],
        [(0, b"h", "text")],
        [(0, "text", b"b")],
        [(True, b"h", b"b")],
        [(0.0, b"h", b"b")],
        [(0, bytearray(b"h"), b"b")],
        [(0, b"h", memoryview(b"b"))],
        [(0, b"h")],
        [(0, b"h", b"b"), (1, b"i")],
        [(0, b"h", b"b", b"extra")],
    ):
        assert exact_columns(odd) is None, odd
    assert blob("é\udcff") == "é\udcff".encode("utf-8", "surrogatepass")
    assert blob(7) == b"7" and blob(bytearray(b"x")) == b"x"


def test_a_lone_surrogate_escape_is_not_canonical_and_never_raises() -> None:
    """``\\udead`` decodes to a lone surrogate, which has no UTF-8 encoding: the body cannot be
    its own canonical encoding. Found by a review: the verifier raised UnicodeEncodeError, so
    one edited row stopped ``agentguard audit verify`` before it reported anything."""
    entry = seal(AuditEvent(action=Action.GENESIS, ts=EPOCH), 0, GENESIS_PREV)
    edits = [
        (b'"detail":{}', b'"detail":{"x":"\\udead"}'),  # the template's detail
        (b'"action":"', b'"action":"\\udead'),  # any other string: the full decode
        (b'"detail":{}', b'"detail":{"x":"\\ud83d\\ude00"}'),  # a pair: not canonical either
    ]
    for old, new in edits:
        body = entry.body.replace(old, new)
        assert body != entry.body
        assert canonical_link(body, b64(GENESIS_PREV), 0) is False
        assert full_path(body, b64(GENESIS_PREV), 0) is False
        forged = AuditEntry(0, leaf(body), body)
        report = verify_log([forged])
        assert not report.ok
        assert [(f.category, f.seq) for f in report.findings] == [(Category.NON_CANONICAL, 0)]
        verifier = LogVerifier()
        verifier.feed_rows([(0, leaf(body), body)])
        assert verifier.finish() == report
