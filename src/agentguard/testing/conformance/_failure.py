"""FailureContract: a backend whose driver fails raises ``StorageError`` from every method.

The storage contract (:mod:`agentguard.storage._protocols`) names one error for an outage:
:class:`~agentguard.storage.StorageError`. A backend that lets its driver's exception escape
still gets a ``503`` from the guard (its outage boundary refuses anything), but every other
caller (the CLI, an admin task, your own code) then has to know every driver's exception
types, and a driver message may quote query parameters: key hashes, ciphertext.

The contract fills the store, makes its driver fail through the subclass's
:meth:`FailureContract.break_store` (close the connection or pool behind the store's back,
point it at a port where nothing listens), then calls every method of every storage Protocol
the store implements and expects each to raise :class:`StorageError` (not ``IntegrityError``,
not a value served from a cache, not a hang), with a message that quotes none of the
arguments. The calls, one per Protocol method, are :func:`failure_calls`; the data behind them
is :func:`fill_store`.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import anyio

from agentguard._model import (
    Account,
    CredentialOwner,
    FlowKind,
    Grants,
    KeyKind,
    KeyRecord,
    User,
    Workspace,
)
from agentguard.storage._connection_protocols import ConnectFlowStore, ConnectionStore
from agentguard.storage._gate_protocols import ApprovalStore, LimitStore, OperatorStore
from agentguard.storage._outage import PROTOCOLS, protocol_methods
from agentguard.storage._protocols import (
    AuditStore,
    CredentialStore,
    DirectoryStore,
    IntegrityError,
    KeyStore,
    ReplayCache,
    StorageError,
)
from agentguard.testing._fakes import FakeClock
from agentguard.testing.conformance._approvals import approval_record
from agentguard.testing.conformance._audit import audit_event
from agentguard.testing.conformance._base import ContractBase, key_record, missing_fixture
from agentguard.testing.conformance._connect_flows import flow_record
from agentguard.testing.conformance._connections import connection_record
from agentguard.testing.conformance._credentials import credential
from agentguard.testing.conformance._directory import seed_directory
from agentguard.testing.conformance._operators import operator_record

__all__ = ["CALL_DEADLINE", "FailureContract", "StoreCall", "failure_calls", "fill_store"]

CALL_DEADLINE = 30.0
"""Seconds one call on a broken store may take before the contract calls it a hang."""

# Every storage Protocol a store may implement (the outage boundary's, and connected accounts').
_PROTOCOLS: tuple[type, ...] = tuple(dict.fromkeys((*PROTOCOLS, ConnectionStore, ConnectFlowStore)))

BREAK_STORE_MISSING = (
    "implement `async def break_store(self, store)` to run FailureContract: make the store's "
    "driver fail for good (close its connection or pool behind its back, point it at a port "
    "where nothing listens); every Protocol method must then raise StorageError"
)


@dataclass(frozen=True)
class StoreCall:
    """One call of a Protocol method with arguments that would succeed on a working store."""

    method: str
    call: Callable[[], Awaitable[object]]
    secrets: tuple[str, ...] = ()
    """Argument values the error must not quote (key hashes, ciphertext)."""


@dataclass(frozen=True)
class Filled:
    """What :func:`fill_store` wrote, so the calls can name records that exist."""

    access: KeyRecord
    refresh: KeyRecord
    replay_id: bytes


async def fill_store(store: object, clock: FakeClock) -> Filled:
    """Write a record of each kind the store keeps, so a cache would have something to serve."""
    access = key_record(clock)
    refresh = key_record(clock, family_id=access.family_id, kind=KeyKind.REFRESH)
    filled = Filled(access=access, refresh=refresh, replay_id=secrets.token_bytes(16))
    if isinstance(store, DirectoryStore):
        await seed_directory(store)
    if isinstance(store, KeyStore):
        await store.insert_keys([access, refresh])
        found = await store.lookup(access.key_hash)  # warm any cache the store may keep
        assert found is not None, "the working store lost a key it was just given"
    if isinstance(store, ReplayCache):
        until = clock.now() + timedelta(minutes=5)
        assert await store.check_and_store(filled.replay_id, until) is True
    if isinstance(store, CredentialStore):
        await store.put_credential(credential(clock, cid="c1", service="crm", owner="u1"))
        assert await store.get_credential("crm", CredentialOwner.USER, "u1") is not None
    if isinstance(store, AuditStore):
        await store.append([audit_event(clock, 0)])
        assert await store.head() is not None
    if isinstance(store, ConnectionStore):
        await store.put_connection(connection_record(clock))
        assert await store.get_connection("crm", "alice") is not None
    if isinstance(store, ConnectFlowStore):
        now = clock.now()
        assert await store.acquire_lease("refresh:crm:alice", holder="h1", now=now, until=now)
    return filled


def failure_calls(store: object, clock: FakeClock, filled: Filled) -> list[StoreCall]:
    """One call per method of each storage Protocol ``store`` implements, on filled data."""
    now = clock.now()
    calls: list[StoreCall] = []
    if isinstance(store, DirectoryStore):
        calls += [
            StoreCall("put_account", lambda: store.put_account(Account(id="a2", name="Other"))),
            StoreCall(
                "put_workspace",
                lambda: store.put_workspace(Workspace(id="w2", account_id="a1", name="Ops")),
            ),
            StoreCall(
                "put_user",
                lambda: store.put_user(User(id="u3", account_id="a1", grants=Grants({}))),
            ),
            StoreCall("set_membership", lambda: store.set_membership("u2", "w1", member=True)),
            StoreCall("get_account", lambda: store.get_account("a1")),
            StoreCall("get_workspace", lambda: store.get_workspace("w1")),
            StoreCall("get_user", lambda: store.get_user("u1")),
            StoreCall("is_member", lambda: store.is_member("u1", "w1")),
            StoreCall("list_users", store.list_users),
        ]
    if isinstance(store, KeyStore):
        family = filled.access.family_id
        fresh = key_record(clock, family_id=family)
        successor = key_record(clock, family_id=family)
        calls += [
            StoreCall("insert_keys", lambda: store.insert_keys([fresh]), (fresh.key_hash.hex(),)),
            StoreCall(
                "lookup",
                lambda: store.lookup(filled.access.key_hash),
                (filled.access.key_hash.hex(),),
            ),
            StoreCall(
                "rotate",
                lambda: store.rotate(filled.refresh.id, [successor], now=now),
                (successor.key_hash.hex(),),
            ),
            StoreCall("revoke", lambda: store.revoke(family_id=family, reason="r", now=now)),
            StoreCall("list_keys", lambda: store.list_keys(user_id="u1")),
        ]
    if isinstance(store, ReplayCache):
        until = now + timedelta(minutes=5)
        calls += [
            StoreCall("check_and_store", lambda: store.check_and_store(filled.replay_id, until)),
        ]
    if isinstance(store, CredentialStore):
        stored = credential(clock, cid="c2", service="projects", owner="u1")
        calls += [
            StoreCall(
                "put_credential", lambda: store.put_credential(stored), (stored.ciphertext.hex(),)
            ),
            StoreCall(
                "get_credential", lambda: store.get_credential("crm", CredentialOwner.USER, "u1")
            ),
            StoreCall(
                "delete_credential",
                lambda: store.delete_credential("crm", CredentialOwner.USER, "u1"),
            ),
            StoreCall("list_credentials", store.list_credentials),
        ]
    if isinstance(store, AuditStore):
        calls += [
            StoreCall("append", lambda: store.append([audit_event(clock, 1)])),
            StoreCall("read", store.read),
            StoreCall("head", store.head),
        ]
    return calls + _gate_calls(store, clock) + _connection_calls(store, clock)


def _gate_calls(store: object, clock: FakeClock) -> list[StoreCall]:
    """The calls of the gate Protocols (approvals, operator tokens, limits) ``store`` has."""
    now = clock.now()
    calls: list[StoreCall] = []
    if isinstance(store, ApprovalStore):
        pending = approval_record(clock)
        calls += [
            StoreCall(
                "create_approval",
                lambda: store.create_approval(pending, now=now),
                (pending.binding,),
            ),
            StoreCall("get_approval", lambda: store.get_approval(pending.id)),
            StoreCall(
                "decide_approval",
                lambda: store.decide_approval(pending.id, approve=True, by="op", now=now),
            ),
            StoreCall(
                "consume_approval",
                lambda: store.consume_approval(pending.id, binding=pending.binding, now=now),
                (pending.binding,),
            ),
            StoreCall("list_approvals", store.list_approvals),
        ]
    if isinstance(store, OperatorStore):
        operator = operator_record(clock)
        calls += [
            StoreCall(
                "put_operator", lambda: store.put_operator(operator), (operator.token_hash.hex(),)
            ),
            StoreCall(
                "lookup_operator",
                lambda: store.lookup_operator(operator.token_hash),
                (operator.token_hash.hex(),),
            ),
            StoreCall("revoke_operator", lambda: store.revoke_operator(operator.id, now=now)),
            StoreCall("list_operators", store.list_operators),
        ]
    if isinstance(store, LimitStore):
        ends = now + timedelta(hours=1)
        calls += [
            StoreCall(
                "charge", lambda: store.charge("budget:c", cost=1, limit=10, expires_at=ends)
            ),
            StoreCall("take", lambda: store.take("rate:b", interval=1.0, burst=2, now=now)),
        ]
    return calls


def _connection_calls(store: object, clock: FakeClock) -> list[StoreCall]:
    """The calls of the connected accounts' Protocols ``store`` has."""
    now = clock.now()
    calls: list[StoreCall] = []
    if isinstance(store, ConnectionStore):
        stored = connection_record(clock)  # the slot fill_store wrote: crm, alice
        next_ = stored.model_copy(update={"version": 2})
        tokens = (stored.access_token.hex(),)
        calls += [
            StoreCall("put_connection", lambda: store.put_connection(stored), tokens),
            StoreCall("get_connection", lambda: store.get_connection("crm", "alice")),
            StoreCall(
                "update_connection",
                lambda: store.update_connection(next_, version=1),
                (next_.access_token.hex(),),
            ),
            StoreCall("delete_connection", lambda: store.delete_connection("crm", "alice")),
            StoreCall("list_connections", store.list_connections),
        ]
    if isinstance(store, ConnectFlowStore):
        flow = flow_record(clock)
        hashed = (flow.token_hash.hex(),)
        calls += [
            StoreCall("put_flow", lambda: store.put_flow(flow), hashed),
            StoreCall(
                "take_flow",
                lambda: store.take_flow(flow.token_hash, kind=FlowKind.STATE, now=now),
                hashed,
            ),
            StoreCall(
                "peek_flow",
                lambda: store.peek_flow(flow.token_hash, kind=FlowKind.TICKET, now=now),
                hashed,
            ),
            StoreCall(
                "acquire_lease",
                lambda: store.acquire_lease("refresh:crm:alice", holder="h2", now=now, until=now),
            ),
            StoreCall(
                "release_lease", lambda: store.release_lease("refresh:crm:alice", holder="h1")
            ),
        ]
    return calls


def implemented_methods(store: object) -> set[str]:
    """Every method of every storage Protocol ``store`` implements."""
    return {
        name
        for protocol in _PROTOCOLS
        if isinstance(store, protocol)
        for name in protocol_methods(protocol)
    }


async def outcome(call: StoreCall) -> BaseException | str:
    """The exception ``call`` raised, or a description of what it did instead."""
    try:
        with anyio.fail_after(CALL_DEADLINE):
            value = await call.call()
    except TimeoutError:
        return f"hung for {CALL_DEADLINE:g} s"
    except Exception as error:
        return error
    return f"returned {value!r:.80}"


def unmapped(call: StoreCall, result: BaseException | str) -> str | None:
    """Why ``result`` breaks the failure contract for ``call``, or ``None`` if it keeps it."""
    if isinstance(result, str):
        return f"{call.method}: {result} instead of raising StorageError"
    if isinstance(result, IntegrityError) or not isinstance(result, StorageError):
        return f"{call.method}: raised {type(result).__module__}.{type(result).__qualname__}"
    said = f"{result!s} {result!r}"
    quoted = [secret for secret in call.secrets if secret in said]
    if quoted:
        return f"{call.method}: the StorageError quotes an argument ({quoted[0][:12]}...)"
    return None


class FailureContract(ContractBase):
    """Subclass with a ``store`` fixture and an async :meth:`break_store` method."""

    async def break_store(self, store: Any) -> None:
        """Make ``store``'s driver fail for good. Override it; this default fails the test.

        ``Any``, so an override may take the backend's own class (``store: MyStore``) and reach
        its driver without a cast; every other parameter in the suite is a storage Protocol.
        """
        missing_fixture(BREAK_STORE_MISSING)

    async def test_every_method_raises_storage_error_once_the_driver_fails(
        self, store: object, clock: FakeClock
    ) -> None:
        methods = implemented_methods(store)
        assert methods, f"{type(store).__name__} implements no storage Protocol"
        filled = await fill_store(store, clock)
        calls = failure_calls(store, clock, filled)
        untested = methods - {c.method for c in calls}
        assert not untested, f"the failure contract has no call for {sorted(untested)}"
        await self.break_store(store)
        broken = [unmapped(call, await outcome(call)) for call in calls]
        problems = [problem for problem in broken if problem is not None]
        assert not problems, (
            f"{len(problems)} of {len(calls)} calls on a store whose driver failed did not "
            "raise StorageError:\n  " + "\n  ".join(problems)
        )

    async def test_failures_keep_raising_until_repaired(
        self, store: object, clock: FakeClock
    ) -> None:
        """A second round of calls fails too: no call quietly answers after the first error."""
        filled = await fill_store(store, clock)
        calls = failure_calls(store, clock, filled)
        await self.break_store(store)
        for _ in range(2):
            results = [await outcome(call) for call in calls]
        problems = [
            problem
            for call, result in zip(calls, results, strict=True)
            if (problem := unmapped(call, result)) is not None
        ]
        assert not problems, "after a failed call, later calls did not fail alike:\n  " + (
            "\n  ".join(problems)
        )
