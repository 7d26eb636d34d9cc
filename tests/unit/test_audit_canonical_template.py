"""AuditEvent.canonical: the template fast path gives canonical_json's bytes, or its error.

``seal`` writes every event through :meth:`AuditEvent.canonical`; a single differing byte would
break the chain against any verifier that re-canonicalises the body, so the fast path is
compared with the generic path on events of every shape, including the ones it must hand over
(wrong types, lone surrogates, naive or non-UTC timestamps, oversized events).
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import inspect
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentguard.audit import leaf_hash
from agentguard.audit._chain import seal
from agentguard.audit._events import (
    MAX_EVENT_BYTES,
    MAX_SAFE_INT,
    Action,
    AuditEvent,
    Decision,
    canonical_json,
    rfc3339,
)


class _Text(str):
    pass


class _Number(enum.IntEnum):
    ONE = 1


class _Frozen(Mapping[str, Any]):
    """A detail that is a Mapping but not a dict."""

    def __init__(self, items: dict[Any, Any]) -> None:
        self._items = items

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


texts = st.text(max_size=12) | st.builds(_Text, st.text(max_size=4))  # surrogates included
big = st.integers(min_value=MAX_SAFE_INT - 2, max_value=MAX_SAFE_INT + 2)
ints = st.integers(min_value=-1000, max_value=1000) | big | st.builds(lambda: -MAX_SAFE_INT - 1)
odd = st.floats(allow_nan=True) | st.booleans() | st.just(_Number.ONE) | st.just(b"x")
strings = st.none() | texts | st.one_of(odd)
numbers = st.none() | ints | st.one_of(odd)
detail_keys = st.text(max_size=6) | st.just("é") | st.integers(0, 3)
detail_values = st.none() | st.booleans() | ints | texts | st.floats() | st.just([1])
details: st.SearchStrategy[dict[Any, Any]] = st.dictionaries(detail_keys, detail_values, max_size=5)
zones = st.sampled_from(
    [timezone.utc, None, timezone(timedelta(hours=2)), timezone(timedelta(0), "UTC")]
)
stamps = st.builds(lambda moment, zone: moment.replace(tzinfo=zone), st.datetimes(), zones)

events = st.builds(
    AuditEvent,
    action=st.sampled_from(Action),
    ts=stamps,
    decision=st.none() | st.sampled_from(Decision),
    reason=strings,
    user_id=strings,
    workspace_id=strings,
    account_id=strings,
    key_id=strings,
    family_id=strings,
    service=strings,
    method=strings,
    path=strings,
    status=numbers,
    latency_us=numbers,
    request_id=strings,
    instance=strings,
    detail=details | details.map(_Frozen),
)


def _outcome(make: Any) -> bytes | str:
    try:
        result: bytes = make()
    except (ValueError, OverflowError) as error:  # OverflowError: a timestamp near year 1
        return f"{type(error).__name__}: {error}"
    return result


@settings(max_examples=600)
@given(events, ints | st.one_of(odd), st.text(max_size=44))
def test_canonical_matches_the_generic_path(event: AuditEvent, seq: int, prev: str) -> None:
    generic = _outcome(lambda: canonical_json(event.body(seq, prev)))
    assert _outcome(lambda: event.canonical(seq, prev)) == generic


def _decision(**changes: Any) -> AuditEvent:
    fields: dict[str, Any] = {
        "action": Action.DECISION,
        "ts": datetime(2026, 12, 6, 7, 0, 1, 5, tzinfo=timezone.utc),
        "decision": Decision.ALLOW,
        "service": "crm",
        "method": "GET",
        "path": "/crm/contacts",
        "latency_us": 12,
        "request_id": "0123456789abcdef",
        "key_id": "key_1",
        "family_id": "fam_1",
        "user_id": "usr_1",
        "workspace_id": "ws-1",
        "account_id": "acc_1",
    }
    return AuditEvent(**{**fields, **changes})


def test_a_guard_decision_takes_the_template() -> None:
    assert _decision()._template_json(0, "") is not None
    assert _decision(status=True)._template_json(0, "") is None  # a bool is not a status


def test_a_guard_decision_has_the_documented_bytes() -> None:
    body = _decision(detail={"b": True, "a": "\u00e9\n"}).canonical(3, "AAAA")
    assert body == (
        b'{"action":"guard.decision","actor":{"account":"acc_1","family":"fam_1",'
        b'"key_id":"key_1","user":"usr_1","workspace":"ws-1"},"decision":"allow",'
        b'"detail":{"a":"\xc3\xa9\\n","b":true},"instance":null,"latency_us":12,"method":"GET",'
        b'"path":"/crm/contacts","prev":"AAAA","reason":null,"request_id":"0123456789abcdef",'
        b'"seq":3,"service":"crm","status":null,"ts":"2026-12-06T07:00:01.000005Z","v":1}'
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"path": "/\ud800"}, "lone surrogate"),
        ({"status": 2.5}, "unsupported type"),
        ({"latency_us": MAX_SAFE_INT + 1}, "safe integer"),
        ({"detail": {"caf\u00e9": 1}}, "non-ASCII"),
        ({"path": "/" + "a" * MAX_EVENT_BYTES}, "exceeds"),
    ],
)
def test_an_event_outside_the_schema_is_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _decision(**changes).canonical(0, "")


def test_seal_hashes_the_canonical_bytes_and_links_prev() -> None:
    prev = bytes(range(32))
    entry = seal(_decision(), 7, prev)
    body = canonical_json(_decision().body(7, base64.b64encode(prev).decode()))
    assert (entry.seq, entry.body, entry.hash) == (7, body, leaf_hash(body))


@given(st.datetimes(timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=-7))])))
def test_rfc3339_fast_path_matches_the_conversion(moment: datetime) -> None:
    expected = (
        moment.astimezone(timezone.utc).replace(tzinfo=None).isoformat("T", "microseconds") + "Z"
    )
    assert rfc3339(moment) == expected


def test_the_constructor_takes_the_fields_in_order_with_their_defaults() -> None:
    parameters = list(inspect.signature(AuditEvent).parameters.values())
    assert [p.name for p in parameters] == [f.name for f in dataclasses.fields(AuditEvent)]
    event = AuditEvent(Action.GENESIS, datetime(2026, 1, 1, tzinfo=timezone.utc))
    assert (event.decision, event.instance, event.detail) == (None, None, {})
    assert AuditEvent(Action.GENESIS, event.ts).detail is not event.detail  # never shared
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.path = "/x"  # type: ignore[misc]
