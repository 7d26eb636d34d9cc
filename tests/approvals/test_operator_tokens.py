"""Operator tokens: issued once, stored hashed, refused when malformed, unknown, revoked,
expired, or an agent key; on the in-memory store and on a real SQLite file."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentguard._keys import generate_key
from agentguard._model import KeyKind
from agentguard.approvals._operators import (
    OPERATOR_PREFIX,
    OPERATOR_TOKEN_LENGTH,
    AgentKeyRefused,
    authenticate_operator,
    generate_operator_token,
    issue_operator_token,
    parse_operator_token,
    revoke_operator_token,
)
from agentguard.errors import InvalidToken, MalformedKey
from agentguard.storage import MemoryStore, PostgresStore, SQLiteStore
from agentguard.testing import FakeClock
from tests.backends.services import temporary_schema

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    if request.param == "memory":
        yield MemoryStore()
    elif request.param == "sqlite":
        async with SQLiteStore(tmp_path / "operators.db") as opened:
            yield opened
    else:
        async with temporary_schema() as (dsn, schema), PostgresStore(dsn, schema=schema) as pg:
            yield pg


async def test_issue_stores_only_the_hash_and_the_token_authenticates(store: Any) -> None:
    clock = FakeClock()
    token, record = await issue_operator_token(store, "alice", clock=clock)
    value = token.reveal()
    assert value.startswith(OPERATOR_PREFIX) and len(value) == OPERATOR_TOKEN_LENGTH
    assert record.token_hash == hashlib.sha256(value.encode()).digest()
    assert record.name == "alice" and record.expires_at is None
    assert value not in repr(record) and value not in repr(token)
    found = await authenticate_operator(store, value, now=clock.now())
    assert found.id == record.id and found.name == "alice"
    assert [r.id for r in await store.list_operators()] == [record.id]


async def test_a_well_formed_token_that_was_never_issued_is_unknown(store: Any) -> None:
    await issue_operator_token(store, "alice", clock=FakeClock())
    stranger = generate_operator_token().reveal()
    with pytest.raises(InvalidToken) as caught:
        await authenticate_operator(store, stranger, now=FakeClock().now())
    assert caught.value.reason.value == "unknown_key" and caught.value.status == 401


async def test_a_revoked_token_is_refused_and_revoking_twice_changes_nothing(store: Any) -> None:
    clock = FakeClock()
    token, record = await issue_operator_token(store, "ci", clock=clock)
    assert await revoke_operator_token(store, record.id, now=clock.now())
    assert not await revoke_operator_token(store, record.id, now=clock.now())
    with pytest.raises(InvalidToken) as caught:
        await authenticate_operator(store, token.reveal(), now=clock.now())
    assert caught.value.reason.value == "revoked"
    assert "revoked" in caught.value.description


async def test_a_token_with_a_lifetime_expires_at_that_instant(store: Any) -> None:
    clock = FakeClock()
    token, record = await issue_operator_token(store, "ci", clock=clock, ttl=timedelta(hours=1))
    assert record.expires_at == clock.now() + timedelta(hours=1)
    clock.advance(timedelta(hours=1) - timedelta(microseconds=1))
    await authenticate_operator(store, token.reveal(), now=clock.now())
    clock.advance(timedelta(microseconds=1))
    with pytest.raises(InvalidToken) as caught:
        await authenticate_operator(store, token.reveal(), now=clock.now())
    assert caught.value.reason.value == "expired"


@pytest.mark.parametrize("kind", [KeyKind.ACCESS, KeyKind.REFRESH])
async def test_an_agent_key_is_refused_saying_so(store: Any, kind: KeyKind) -> None:
    key = generate_key(kind).reveal()
    with pytest.raises(AgentKeyRefused) as caught:
        await authenticate_operator(store, key, now=FakeClock().now())
    error = caught.value
    assert isinstance(error, InvalidToken) and error.status == 401
    assert "agent keys are not accepted on the operator listener" in error.description
    assert error.reason.value == "wrong_key_kind"
    assert key not in str(error) and key not in repr(error)


async def test_a_mistyped_token_fails_its_checksum_before_any_lookup() -> None:
    class NoLookups:
        async def lookup_operator(self, token_hash: bytes) -> None:
            raise AssertionError("a malformed token reached the store")

    value = generate_operator_token().reveal()
    index = len(OPERATOR_PREFIX) + 5
    typo = value[:index] + ("A" if value[index] != "A" else "B") + value[index + 1 :]
    with pytest.raises(MalformedKey, match="checksum"):
        await authenticate_operator(NoLookups(), typo, now=FakeClock().now())  # type: ignore[arg-type]
    with pytest.raises(MalformedKey, match="exactly"):
        await authenticate_operator(NoLookups(), value[:-1], now=FakeClock().now())  # type: ignore[arg-type]
    too_big = OPERATOR_PREFIX + "z" * (OPERATOR_TOKEN_LENGTH - len(OPERATOR_PREFIX))
    with pytest.raises(MalformedKey, match="out of range"):
        parse_operator_token(too_big)


def test_the_token_shape_matches_agent_keys_but_not_their_prefix() -> None:
    tokens = {generate_operator_token().reveal() for _ in range(50)}
    assert len(tokens) == 50
    for value in tokens:
        assert parse_operator_token(value) == value
        assert value[len(OPERATOR_PREFIX) :].isalnum()


async def test_a_lifetime_must_be_positive(store: Any) -> None:
    with pytest.raises(ValueError, match="positive"):
        await issue_operator_token(store, "x", clock=FakeClock(), ttl=timedelta(0))
    assert await store.list_operators() == []


_STORE = MemoryStore()
_ISSUED = anyio.run(lambda: issue_operator_token(_STORE, "fuzz", clock=FakeClock()))[0]


def _refuse_only_invalid_token(value: object) -> None:
    async def attempt() -> None:
        await authenticate_operator(_STORE, value, now=FakeClock().now())

    with pytest.raises(InvalidToken):
        anyio.run(attempt)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=80), st.binary(max_size=60), st.integers(), st.none()))
def test_random_input_never_authenticates_and_only_raises_invalid_token(value: object) -> None:
    _refuse_only_invalid_token(value)


_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["ag_op_", "ag_at_", "ag_rt_", "AG_OP_", "ag_op", ""]),
    st.text(alphabet=_BASE62 + "-_=é\x00 ", min_size=40, max_size=55),
)
def test_token_shaped_input_never_authenticates(prefix: str, tail: str) -> None:
    value = prefix + tail
    if value == _ISSUED.reveal():  # pragma: no cover - 2**-256
        return
    _refuse_only_invalid_token(value)


def test_the_issued_fuzz_token_does_authenticate() -> None:
    """The property tests above prove something: the same store accepts its real token."""

    async def attempt() -> str:
        record = await authenticate_operator(_STORE, _ISSUED.reveal(), now=FakeClock().now())
        return record.name

    assert anyio.run(attempt) == "fuzz"
