"""The storage boundary: whatever a backend raises becomes StoreUnavailable, logged safely."""

from __future__ import annotations

import asyncio
import builtins
import inspect
import logging
from datetime import datetime, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentguard.errors import InvalidToken, StoreUnavailable
from agentguard.storage import AuditStore, KeyStore, MemoryStore, ReplayCache
from agentguard.storage._outage import (
    PROGRAMMING_ERRORS,
    STORE_METHODS,
    protocol_methods,
    shield_store,
    store_outage,
)
from agentguard.testing._faults import FaultyStore

pytestmark = pytest.mark.anyio

SECRET = "password=hunter2-" + "x" * 16


class VendorError(Exception):
    pass


# Every builtin Exception subclass we can instantiate with one message, plus a third party's.
_BUILTIN = [
    kind
    for kind in vars(builtins).values()
    if isinstance(kind, type) and issubclass(kind, Exception) and not issubclass(kind, Warning)
]


def _make(kind: type[Exception]) -> Exception:
    try:
        return kind(SECRET)
    except TypeError:
        return VendorError(SECRET)


@given(kind=st.sampled_from([*_BUILTIN, VendorError]))
def test_any_exception_becomes_store_unavailable_without_its_message(
    kind: type[Exception],
) -> None:
    error = _make(kind)
    with pytest.raises(StoreUnavailable) as refused, store_outage("key store", "lookup"):
        raise error
    assert refused.value.__cause__ is error
    assert refused.value.status == 503 and SECRET not in str(refused.value)
    assert ("retry-after", "1") in refused.value.response_headers()


def test_a_refusal_made_on_purpose_passes_through() -> None:
    with pytest.raises(InvalidToken), store_outage():
        raise InvalidToken()


def test_cancellation_is_never_swallowed() -> None:
    with pytest.raises(asyncio.CancelledError), store_outage():
        raise asyncio.CancelledError


def test_logs_name_the_call_and_the_type_never_the_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, "agentguard.storage")
    with pytest.raises(StoreUnavailable), store_outage("replay cache", "check_and_store"):
        raise ConnectionResetError(SECRET)
    (record,) = caplog.records
    assert record.levelno == logging.ERROR
    assert record.getMessage() == (
        "storage call failed: replay cache.check_and_store: ConnectionResetError"
    )
    with pytest.raises(StoreUnavailable), store_outage("key store"):
        raise VendorError(SECRET)
    assert caplog.records[-1].getMessage().endswith(f"key store: {__name__}.VendorError")
    assert SECRET not in caplog.text


@pytest.mark.parametrize("kind", PROGRAMMING_ERRORS)
def test_a_programming_error_is_refused_but_logged_as_a_suspected_bug(
    kind: type[Exception], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, "agentguard.storage")
    with pytest.raises(StoreUnavailable), store_outage("key store", "lookup"):
        raise kind(SECRET)
    message = caplog.records[-1].getMessage()
    assert caplog.records[-1].levelno == logging.ERROR
    assert f"raised {kind.__name__} at test_store_outage.py:" in message, message
    assert "a bug in the backend or its caller, not an outage" in message
    assert SECRET not in caplog.text


def test_store_methods_are_every_method_of_every_protocol() -> None:
    assert protocol_methods(ReplayCache) == ("check_and_store",)
    assert protocol_methods(AuditStore) == ("append", "head", "read")
    assert "lookup" in protocol_methods(KeyStore) and "get_user" in protocol_methods(KeyStore)
    assert len(STORE_METHODS) == 43  # 22 + approvals 5, operators 4, limits 2, connections 10


async def test_a_shielded_store_refuses_with_503_and_forwards_everything_else() -> None:
    inner = FaultyStore(MemoryStore())
    shielded = shield_store(inner, "key store")
    assert shield_store(shielded, "again") is shielded
    assert shielded.store is inner.store  # non-Protocol attributes pass through
    assert await shielded.lookup(bytes(32)) is None
    inner.fail("lookup", lambda: OSError(SECRET))
    with pytest.raises(StoreUnavailable):
        await shielded.lookup(bytes(32))
    inner.fail("check_and_store", InvalidToken)  # on purpose: not an outage
    with pytest.raises(InvalidToken):
        await shielded.check_and_store(b"k", datetime.now(timezone.utc))
    assert SECRET not in repr(shielded)


async def test_a_shield_calls_the_method_the_store_has_now_and_passes_protocol_checks() -> None:
    store = MemoryStore()
    shielded = shield_store(store, "key store")
    assert isinstance(shielded, KeyStore) and isinstance(shielded, ReplayCache)
    assert inspect.getattr_static(shielded, "lookup")  # what Python 3.12+ isinstance uses

    async def broken(key_hash: bytes) -> None:
        raise ConnectionError(SECRET)

    store.lookup = broken  # type: ignore[method-assign]
    with pytest.raises(StoreUnavailable):
        await shielded.lookup(bytes(32))
