"""The stdlib fast path of canonical_json gives RFC 8785 bytes for every event the schema allows."""

from __future__ import annotations

import base64

import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from agentguard.audit._events import MAX_SAFE_INT, Action, AuditEvent, Decision, canonical_json

texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=24)
optional_texts = st.none() | texts
ints = st.integers(min_value=-MAX_SAFE_INT, max_value=MAX_SAFE_INT)
keys = st.from_regex(r"[a-z][a-z0-9_]{0,15}", fullmatch=True)
scalars = st.none() | st.booleans() | ints | texts

events = st.builds(
    AuditEvent,
    action=st.sampled_from(Action),
    ts=st.datetimes(),
    decision=st.none() | st.sampled_from(Decision),
    reason=optional_texts,
    user_id=optional_texts,
    workspace_id=optional_texts,
    key_id=optional_texts,
    service=optional_texts,
    method=optional_texts,
    path=optional_texts,
    status=st.none() | st.integers(100, 599),
    latency_us=st.none() | ints,
    request_id=optional_texts,
    instance=optional_texts,
    detail=st.dictionaries(keys, scalars, max_size=6),
)


@settings(max_examples=300)
@given(
    events, st.integers(min_value=0, max_value=MAX_SAFE_INT), st.binary(min_size=32, max_size=32)
)
def test_canonical_json_equals_rfc8785(event: AuditEvent, seq: int, prev: bytes) -> None:
    body = event.body(seq, base64.b64encode(prev).decode())
    assert canonical_json(body) == rfc8785.dumps(body)
