"""Deliberately broken backends: each has one bug a real backend could ship with.

``test_suite_catches_broken.py`` runs the shipped conformance suite against each one and
expects the suite to fail it; the unbroken reference (``MemoryStore``, or ``SQLiteStore`` for
the error mapping) must pass the same tests. Each store is otherwise correct, so a failure
can only come from its one bug; several are correct on a single instance and wrong only across
two instances over one backend, which is the case the multi-instance contracts exist for.

They build on ``MemoryStore``'s shared backing (``shared_with=``), reaching into its private
tables where the bug lives below the Protocol (an unlocked audit append, per-instance revocation
marks); ``UnmappedErrorsSQLiteStore`` is ``SQLiteStore`` before it mapped driver errors.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Sequence
from datetime import datetime, timedelta

import anyio
import anyio.lowlevel

from agentguard import Account, Clock, KeyKind, KeyRecord, User, Workspace
from agentguard._model import (
    ApprovalRecord,
    ApprovalStatus,
    ConnectedAccount,
    ConnectFlow,
    FlowKind,
)
from agentguard.audit import AuditEntry, AuditEvent
from agentguard.audit._chain import GENESIS_PREV, seal
from agentguard.storage import MemoryStore, SQLiteStore
from agentguard.storage._gate_protocols import Charge, RateDecision
from agentguard.storage._gcra import epoch_micros, interval_micros
from agentguard.storage._protocols import IntegrityError, KeyLookup, StorageError, revoke_selector
from agentguard.storage._sqlite._base import T, Work

__all__ = [
    "ApprovalReusableStore",
    "CachingLookupStore",
    "FlowOfAnyKindStore",
    "GrantUpdatesDroppedStore",
    "LeaseReleasedByAnyoneStore",
    "NoFamilyRevokeStore",
    "NonAtomicChargeStore",
    "NonAtomicConnectionUpdateStore",
    "NonAtomicConsumeStore",
    "NonAtomicDecideStore",
    "NonAtomicFlowTakeStore",
    "NonAtomicRotateStore",
    "NonAtomicTakeStore",
    "ReplayNeverExpiresStore",
    "RetryAfterWholeSecondsStore",
    "RevocationMarksPerInstanceStore",
    "UnlockedAppendStore",
    "UnmappedErrorsSQLiteStore",
]


class CachingLookupStore(MemoryStore):
    """Caches ``lookup`` per instance; forgets the cache on its own writes, never on others'."""

    def __init__(
        self, *, clock: Clock | None = None, shared_with: MemoryStore | None = None
    ) -> None:
        super().__init__(clock=clock, shared_with=shared_with)
        self._cache: dict[bytes, KeyLookup | None] = {}

    async def lookup(self, key_hash: bytes) -> KeyLookup | None:
        if key_hash not in self._cache:
            self._cache[key_hash] = await super().lookup(key_hash)
        return self._cache[key_hash]

    async def put_account(self, account: Account) -> None:
        self._cache.clear()
        await super().put_account(account)

    async def put_workspace(self, workspace: Workspace) -> None:
        self._cache.clear()
        await super().put_workspace(workspace)

    async def put_user(self, user: User) -> None:
        self._cache.clear()
        await super().put_user(user)

    async def set_membership(self, user_id: str, workspace_id: str, *, member: bool) -> None:
        self._cache.clear()
        await super().set_membership(user_id, workspace_id, member=member)

    async def insert_keys(self, records: Sequence[KeyRecord]) -> None:
        self._cache.clear()
        await super().insert_keys(records)

    async def rotate(self, used_id: str, new: Sequence[KeyRecord], *, now: datetime) -> bool:
        self._cache.clear()
        return await super().rotate(used_id, new, now=now)

    async def revoke(
        self,
        *,
        key_id: str | None = None,
        family_id: str | None = None,
        user_id: str | None = None,
        reason: str,
        now: datetime,
    ) -> int:
        self._cache.clear()
        return await super().revoke(
            key_id=key_id, family_id=family_id, user_id=user_id, reason=reason, now=now
        )


class NoFamilyRevokeStore(MemoryStore):
    """Revokes a family (or a user) by revoking the keys it has now, one by one: no mark."""

    async def revoke(
        self,
        *,
        key_id: str | None = None,
        family_id: str | None = None,
        user_id: str | None = None,
        reason: str,
        now: datetime,
    ) -> int:
        field, value = revoke_selector(key_id=key_id, family_id=family_id, user_id=user_id)
        if field == "key_id":
            return await super().revoke(key_id=value, reason=reason, now=now)
        chosen = await self.list_keys(**{field: value})
        count = 0
        for record in chosen:
            count += await super().revoke(key_id=record.id, reason=reason, now=now)
        return count


class NonAtomicRotateStore(MemoryStore):
    """Checks the refresh key, then rotates: two concurrent callers can both pass the check."""

    async def rotate(self, used_id: str, new: Sequence[KeyRecord], *, now: datetime) -> bool:
        used = {record.id: record for record in await self.list_keys()}.get(used_id)
        if (
            used is None
            or used.kind is not KeyKind.REFRESH
            or used.used_at is not None
            or used.revoked_at is not None
        ):
            return False
        await anyio.lowlevel.checkpoint()  # the gap between SELECT and UPDATE
        if not await super().rotate(used_id, new, now=now):
            await self.insert_keys(new)  # the check above passed: carry on regardless
        return True


class UnlockedAppendStore(MemoryStore):
    """Appends under an in-process lock only: reads the head, then writes after it.

    One instance serialises its own appends, so the single-instance contract passes; two
    instances over one backend read the same head and fork the chain.
    """

    def __init__(
        self, *, clock: Clock | None = None, shared_with: MemoryStore | None = None
    ) -> None:
        super().__init__(clock=clock, shared_with=shared_with)
        self._append_lock = anyio.Lock()

    async def append(self, events: Sequence[AuditEvent]) -> list[AuditEntry]:
        async with self._append_lock:
            head = await self.head()
            await anyio.lowlevel.checkpoint()  # the round trip between reading and writing
            seq, prev = (0, GENESIS_PREV) if head is None else (head.seq + 1, head.hash)
            sealed: list[AuditEntry] = []
            for event in events:
                entry = seal(event, seq, prev)
                sealed.append(entry)
                seq, prev = seq + 1, entry.hash
            with self._lock:
                self._audit.extend(sealed)
            return sealed


class ReplayNeverExpiresStore(MemoryStore):
    """Keeps every replay id forever: an expired nonce or proof id can never be used again."""

    async def check_and_store(self, key: bytes, expires_at: datetime) -> bool:
        return await super().check_and_store(key, expires_at + timedelta(days=365 * 100))


class GrantUpdatesDroppedStore(MemoryStore):
    """``put_user`` of an existing user keeps the stored record: grant changes are lost."""

    async def put_user(self, user: User) -> None:
        if await self.get_user(user.id) is None:
            await super().put_user(user)


class RevocationMarksPerInstanceStore(MemoryStore):
    """Keeps the revoked-family marks in each instance instead of in the shared backend.

    On one instance, revocation wins against rotation; across instances, a rotation (or an
    insert) through the other instance adds live keys to a family revoked through this one.
    """

    def __init__(
        self, *, clock: Clock | None = None, shared_with: MemoryStore | None = None
    ) -> None:
        super().__init__(clock=clock, shared_with=shared_with)
        self._revoked_families = {}


class UnmappedErrorsSQLiteStore(SQLiteStore):
    """``SQLiteStore`` letting ``sqlite3``'s exceptions out instead of raising StorageError."""

    def _run(self, work: Work[T], broken: str) -> T:
        with self._writer.lock:
            if self._closed:
                raise StorageError("this SQLiteStore is closed")
            if self._connection is None:
                self._connection = self._open()
            try:
                return work(self._connection)
            except sqlite3.IntegrityError as exc:
                raise IntegrityError(f"{broken} ({exc})") from exc


class MemberAnyWorkspaceStore(MemoryStore):
    """``lookup``'s ``member`` says whether the user is in any workspace, not the key's own."""

    async def lookup(self, key_hash: bytes) -> KeyLookup | None:
        found = await super().lookup(key_hash)
        if found is None:
            return None
        anywhere = any(user == found.key.user_id for user, _ in self._members)
        return found._replace(member=anywhere)


class NewestFirstStore(MemoryStore):
    """``list_keys`` answers newest first, not in insertion order."""

    async def list_keys(
        self, *, user_id: str | None = None, family_id: str | None = None
    ) -> list[KeyRecord]:
        return list(reversed(await super().list_keys(user_id=user_id, family_id=family_id)))


class LoopLockedStore(MemoryStore):
    """Serialises rotation with an ``anyio.Lock`` (bound to one event loop) and awaits inside it,
    yet is declared usable from several loops at once: across loops it deadlocks."""

    def __init__(
        self, *, clock: Clock | None = None, shared_with: MemoryStore | None = None
    ) -> None:
        super().__init__(clock=clock, shared_with=shared_with)
        self._loop_lock = anyio.Lock()

    async def rotate(self, used_id: str, new: Sequence[KeyRecord], *, now: datetime) -> bool:
        async with self._loop_lock:
            await anyio.sleep(0.01)
            return await super().rotate(used_id, new, now=now)


class NonAtomicChargeStore(MemoryStore):
    """Reads the counter, then writes the new total: concurrent charges overwrite each other."""

    async def charge(self, counter: str, *, cost: int, limit: int, expires_at: datetime) -> Charge:
        used = self._gates.counters.get(counter, (0, expires_at))[0]
        await anyio.lowlevel.checkpoint()  # the round trip between reading and writing
        if used + cost > limit:
            return Charge(False, used)
        with self._lock:
            self._gates.counters[counter] = (used + cost, expires_at)
        return Charge(True, used + cost)


class NonAtomicTakeStore(MemoryStore):
    """Reads the bucket's arrival time, then writes it: a burst of callers all get through."""

    async def take(
        self, bucket: str, *, interval: float, burst: int, now: datetime
    ) -> RateDecision:
        interval_us, now_us = interval_micros(interval, burst), epoch_micros(now)
        arrival = max(self._gates.buckets.get(bucket, now_us), now_us) + interval_us
        await anyio.lowlevel.checkpoint()
        if arrival - now_us > burst * interval_us:
            return RateDecision(False, (arrival - now_us - burst * interval_us) / 1e6)
        with self._lock:
            self._gates.buckets[bucket] = arrival
        return RateDecision(True, 0.0)


class RetryAfterWholeSecondsStore(MemoryStore):
    """Rounds ``retry_after`` up to whole seconds, as a store keeping seconds would."""

    async def take(
        self, bucket: str, *, interval: float, burst: int, now: datetime
    ) -> RateDecision:
        decision = await super().take(bucket, interval=interval, burst=burst, now=now)
        return decision._replace(retry_after=float(math.ceil(decision.retry_after)))


class ApprovalReusableStore(MemoryStore):
    """Checks an approval on use but never marks it consumed: one approval, many calls."""

    async def consume_approval(self, approval_id: str, *, binding: str, now: datetime) -> bool:
        found = await self.get_approval(approval_id)
        return (
            found is not None
            and found.status is ApprovalStatus.APPROVED
            and found.binding == binding
            and found.expires_at > now
        )


class NonAtomicConsumeStore(MemoryStore):
    """Checks the approval, then marks it consumed: concurrent uses all pass the check."""

    async def consume_approval(self, approval_id: str, *, binding: str, now: datetime) -> bool:
        found = await self.get_approval(approval_id)
        if (
            found is None
            or found.status is not ApprovalStatus.APPROVED
            or found.binding != binding
            or not found.expires_at > now
        ):
            return False
        await anyio.lowlevel.checkpoint()
        with self._lock:
            self._gates.approvals[approval_id] = found.model_copy(
                update={"status": ApprovalStatus.CONSUMED, "consumed_at": now}
            )
        return True


class NonAtomicDecideStore(MemoryStore):
    """Checks that the approval is pending, then decides: concurrent operators all win."""

    async def decide_approval(
        self, approval_id: str, *, approve: bool, by: str, now: datetime
    ) -> ApprovalRecord | None:
        found = await self.get_approval(approval_id)
        if found is None or found.status is not ApprovalStatus.PENDING or found.expires_at <= now:
            return None
        await anyio.lowlevel.checkpoint()
        status = ApprovalStatus.APPROVED if approve else ApprovalStatus.DENIED
        decided = found.model_copy(update={"status": status, "decided_at": now, "decided_by": by})
        with self._lock:
            self._gates.approvals[approval_id] = decided
        return decided


class NonAtomicConnectionUpdateStore(MemoryStore):
    """Checks the stored version, then writes: concurrent refreshes all win, and all but one
    rotated refresh token are lost."""

    async def update_connection(self, record: ConnectedAccount, *, version: int) -> bool:
        if record.version != version + 1:
            raise ValueError("an updated connection's version must be version + 1")
        found = await self.get_connection(record.service, record.user_id)
        if found is None or found.id != record.id or found.version != version:
            return False
        await anyio.lowlevel.checkpoint()
        with self._lock:
            self._connections.connections[(record.service, record.user_id)] = record
        return True


class NonAtomicFlowTakeStore(MemoryStore):
    """Finds the flow, then removes it: concurrent callbacks with one ``state`` all get it."""

    async def take_flow(
        self, token_hash: bytes, *, kind: FlowKind, now: datetime
    ) -> ConnectFlow | None:
        tables = self._connections
        flow_id = tables.flow_by_hash.get(token_hash)
        flow = None if flow_id is None else tables.flows.get(flow_id)
        if flow is None or flow.kind is not kind or not flow.expires_at > now:
            return None
        await anyio.lowlevel.checkpoint()
        with self._lock:
            tables.flows.pop(flow.id, None)
            tables.flow_by_hash.pop(token_hash, None)
        return flow


class FlowOfAnyKindStore(MemoryStore):
    """Takes a flow by its hash whatever its kind: a ticket's token passes as an OAuth state."""

    async def take_flow(
        self, token_hash: bytes, *, kind: FlowKind, now: datetime
    ) -> ConnectFlow | None:
        for any_kind in FlowKind:
            flow = await super().take_flow(token_hash, kind=any_kind, now=now)
            if flow is not None:
                return flow
        return None


class PeekTakesFlowStore(MemoryStore):
    """Peeks by taking: a mail scanner opening a connect link uses it up before its human."""

    async def peek_flow(
        self, token_hash: bytes, *, kind: FlowKind, now: datetime
    ) -> ConnectFlow | None:
        return await self.take_flow(token_hash, kind=kind, now=now)


class LeaseReleasedByAnyoneStore(MemoryStore):
    """Releases a lease whoever asks: a slow refresher frees the lease of the one now holding it."""

    async def release_lease(self, name: str, *, holder: str) -> bool:
        with self._lock:
            return self._connections.leases.pop(name, None) is not None
