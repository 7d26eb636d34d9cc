"""MemoryStore: the reference implementation of every storage protocol.

Dicts behind one lock. It is the model the conformance suite and the stateful tests compare
other backends against, and the fake users' test suites reach for. It keeps nothing across
restarts: do not run production on it.

Every write does its work under a ``threading.Lock`` without awaiting inside, so it is atomic
both within one event loop and across threads (the WSGI adapter's background loop and a test's
own loop may share one store); single-key reads rely on dict reads being atomic.

Shared backing: ``MemoryStore(clock=clock, shared_with=store)`` (or ``store.another_instance()``)
is a second instance over the first one's state and lock, as two processes on one database
share rows and row locks. The conformance suite's multi-instance contracts run on such a pair.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from agentguard._clock import Clock, SystemClock, utc
from agentguard._model import (
    Account,
    CredentialOwner,
    KeyKind,
    KeyRecord,
    StoredCredential,
    User,
    Workspace,
)
from agentguard.audit._chain import GENESIS_PREV, AuditEntry, seal
from agentguard.audit._events import AuditEvent
from agentguard.audit._prefix import ArchivedPrefix, drop_problem
from agentguard.storage._memory_connections import ConnectionTables, MemoryConnections
from agentguard.storage._memory_gates import GateTables, MemoryGates
from agentguard.storage._protocols import IntegrityError, KeyLookup, revoke_selector

__all__ = ["MemoryStore"]


@dataclass(eq=False)
class _Backing:
    """The "database": every table and the one lock, shared by the instances over it."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    accounts: dict[str, Account] = field(default_factory=dict)
    workspaces: dict[str, Workspace] = field(default_factory=dict)
    users: dict[str, User] = field(default_factory=dict)
    members: set[tuple[str, str]] = field(default_factory=set)
    keys: dict[str, KeyRecord] = field(default_factory=dict)
    by_hash: dict[bytes, str] = field(default_factory=dict)
    revoked_families: dict[str, tuple[datetime, str]] = field(default_factory=dict)
    replay: dict[bytes, datetime] = field(default_factory=dict)
    replay_expiries: list[tuple[datetime, bytes]] = field(default_factory=list)
    credentials: dict[tuple[str, CredentialOwner, str], StoredCredential] = field(
        default_factory=dict
    )
    audit: list[AuditEntry] = field(default_factory=list)
    archived: ArchivedPrefix | None = None  # what was kept of the events dropped from audit
    gates: GateTables = field(default_factory=GateTables)  # approvals, operators, limits
    connections: ConnectionTables = field(default_factory=ConnectionTables)  # connected accounts


class MemoryStore(MemoryGates, MemoryConnections):
    """In-memory DirectoryStore, KeyStore, ReplayCache, CredentialStore and AuditStore, the
    gates' ApprovalStore, OperatorStore and LimitStore (:mod:`agentguard.storage._memory_gates`)
    and connected accounts' ConnectionStore and ConnectFlowStore
    (:mod:`agentguard.storage._memory_connections`).

    Args:
        clock: the time source of the replay cache and of budget windows' expiry (default: the
            system clock).
        shared_with: another ``MemoryStore`` whose state and lock this instance shares, as a
            second process on the same database would; ``None`` (default) starts empty.
    """

    def __init__(
        self, *, clock: Clock | None = None, shared_with: MemoryStore | None = None
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        backing: _Backing = shared_with._backing if shared_with is not None else _Backing()
        self._backing: _Backing = backing
        self._lock = backing.lock
        self._accounts = backing.accounts
        self._workspaces = backing.workspaces
        self._users = backing.users
        self._members = backing.members
        self._keys = backing.keys
        self._by_hash = backing.by_hash
        self._revoked_families = backing.revoked_families
        self._replay = backing.replay
        self._replay_expiries = backing.replay_expiries
        self._credentials = backing.credentials
        self._audit = backing.audit
        self._gates = backing.gates
        self._connections = backing.connections

    def another_instance(self, *, clock: Clock | None = None) -> MemoryStore:
        """A second instance over this one's state and lock (on ``clock``, default the same)."""
        return MemoryStore(clock=clock or self.clock, shared_with=self)

    def __repr__(self) -> str:
        return f"MemoryStore(users={len(self._users)}, keys={len(self._keys)})"

    # DirectoryStore

    async def put_account(self, account: Account) -> None:
        with self._lock:
            self._accounts[account.id] = account

    async def put_workspace(self, workspace: Workspace) -> None:
        with self._lock:
            if workspace.account_id not in self._accounts:
                raise IntegrityError("workspace refers to an unknown account")
            current = self._workspaces.get(workspace.id)
            if current is not None and current.account_id != workspace.account_id:
                raise IntegrityError("a workspace cannot move to another account")
            self._workspaces[workspace.id] = workspace

    async def put_user(self, user: User) -> None:
        with self._lock:
            if user.account_id not in self._accounts:
                raise IntegrityError("user refers to an unknown account")
            current = self._users.get(user.id)
            if current is not None and current.account_id != user.account_id:
                raise IntegrityError("a user cannot move to another account")
            self._users[user.id] = user

    async def set_membership(self, user_id: str, workspace_id: str, *, member: bool) -> None:
        with self._lock:
            user = self._users.get(user_id)
            workspace = self._workspaces.get(workspace_id)
            if user is None or workspace is None:
                raise IntegrityError("membership refers to an unknown user or workspace")
            if user.account_id != workspace.account_id:
                raise IntegrityError("user and workspace belong to different accounts")
            if member:
                self._members.add((user_id, workspace_id))
            else:
                self._members.discard((user_id, workspace_id))

    async def get_account(self, account_id: str) -> Account | None:
        return self._accounts.get(account_id)

    async def get_workspace(self, workspace_id: str) -> Workspace | None:
        return self._workspaces.get(workspace_id)

    async def get_user(self, user_id: str) -> User | None:
        return self._users.get(user_id)

    async def is_member(self, user_id: str, workspace_id: str) -> bool:
        return (user_id, workspace_id) in self._members

    async def list_users(self, account_id: str | None = None) -> list[User]:
        with self._lock:
            users = list(self._users.values())
        return sorted(
            (u for u in users if account_id is None or u.account_id == account_id),
            key=lambda u: u.id,
        )

    # KeyStore

    def _insert_locked(self, records: Sequence[KeyRecord]) -> None:
        ids = {r.id for r in records}
        hashes = {r.key_hash for r in records}
        if (
            len(ids) != len(records)
            or len(hashes) != len(records)
            or ids & self._keys.keys()
            or hashes & self._by_hash.keys()
        ):
            raise IntegrityError("duplicate key id or key hash")
        for record in records:
            self._keys[record.id] = record
            self._by_hash[record.key_hash] = record.id

    async def insert_keys(self, records: Sequence[KeyRecord]) -> None:
        with self._lock:
            self._insert_locked(records)

    def _effective(self, record: KeyRecord) -> KeyRecord:
        """``record`` as it stands: a key of a revoked family is revoked, whenever it was added."""
        family = self._revoked_families.get(record.family_id)
        if family is None or record.revoked_at is not None:
            return record
        revoked_at, reason = family
        return record.model_copy(update={"revoked_at": revoked_at, "revoked_reason": reason})

    async def lookup(self, key_hash: bytes) -> KeyLookup | None:
        with self._lock:
            key_id = self._by_hash.get(key_hash)
            if key_id is None:
                return None
            key = self._effective(self._keys[key_id])
            return KeyLookup(
                key=key,
                user=self._users.get(key.user_id),
                account=self._accounts.get(key.account_id),
                member=(key.user_id, key.workspace_id) in self._members,
            )

    async def rotate(self, used_id: str, new: Sequence[KeyRecord], *, now: datetime) -> bool:
        now = utc(now)
        with self._lock:
            used = self._keys.get(used_id)
            if (
                used is None
                or used.kind is not KeyKind.REFRESH
                or used.used_at is not None
                or used.revoked_at is not None
                or used.family_id in self._revoked_families
            ):
                return False
            self._insert_locked(new)
            self._keys[used_id] = used.model_copy(update={"used_at": now})
            return True

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
        now = utc(now)
        with self._lock:
            marked = self._revoked_families
            families: set[str] = set()
            if field == "family_id":
                families = {value}
            elif field == "user_id":
                families = {r.family_id for r in self._keys.values() if r.user_id == value}
            count = 0
            for record in list(self._keys.values()):
                chosen = record.id == value if field == "key_id" else record.family_id in families
                if chosen and record.revoked_at is None and record.family_id not in marked:
                    self._keys[record.id] = record.model_copy(
                        update={"revoked_at": now, "revoked_reason": reason}
                    )
                    count += 1
            for family in families:
                marked.setdefault(family, (now, reason))
        return count

    async def list_keys(
        self, *, user_id: str | None = None, family_id: str | None = None
    ) -> list[KeyRecord]:
        with self._lock:
            records = [self._effective(r) for r in self._keys.values()]
        return [
            r
            for r in records
            if (user_id is None or r.user_id == user_id)
            and (family_id is None or r.family_id == family_id)
        ]

    # ReplayCache

    async def check_and_store(self, key: bytes, expires_at: datetime) -> bool:
        now = self.clock.now()
        with self._lock:
            expiries = self._replay_expiries
            while expiries and expiries[0][0] <= now:  # forget what has expired, oldest first
                expired_at, old = heapq.heappop(expiries)
                if self._replay.get(old) == expired_at:
                    del self._replay[old]
            current = self._replay.get(key)
            if current is not None and current > now:
                return False
            self._replay[key] = expires_at
            heapq.heappush(expiries, (expires_at, key))
            return True

    # CredentialStore

    async def put_credential(self, credential: StoredCredential) -> None:
        with self._lock:
            slot = (credential.service, credential.owner_kind, credential.owner_id)
            self._credentials[slot] = credential

    async def get_credential(
        self, service: str, owner_kind: CredentialOwner, owner_id: str
    ) -> StoredCredential | None:
        return self._credentials.get((service, owner_kind, owner_id))

    async def delete_credential(
        self, service: str, owner_kind: CredentialOwner, owner_id: str
    ) -> bool:
        with self._lock:
            return self._credentials.pop((service, owner_kind, owner_id), None) is not None

    async def list_credentials(self, service: str | None = None) -> list[StoredCredential]:
        with self._lock:
            items = list(self._credentials.values())
        return sorted(
            (c for c in items if service is None or c.service == service), key=lambda c: c.id
        )

    # AuditStore

    async def append(self, events: Sequence[AuditEvent]) -> list[AuditEntry]:
        with self._lock:
            sealed: list[AuditEntry] = []
            prev = self._audit[-1].hash if self._audit else GENESIS_PREV
            seq = self._offset() + len(self._audit)
            for event in events:
                entry = seal(event, seq, prev)
                sealed.append(entry)
                prev, seq = entry.hash, seq + 1
            self._audit.extend(sealed)
            return sealed

    async def read(self, start: int = 0, stop: int | None = None) -> list[AuditEntry]:
        if stop is not None and stop <= start:
            return []
        with self._lock:
            offset = self._offset()
            end = None if stop is None else max(0, stop - offset)
            return self._audit[max(0, start - offset) : end]

    async def head(self) -> AuditEntry | None:
        with self._lock:
            return self._audit[-1] if self._audit else None

    # AuditArchiveStore

    def _offset(self) -> int:
        archived = self._backing.archived
        return 0 if archived is None else archived.size

    async def archived_prefix(self) -> ArchivedPrefix | None:
        with self._lock:
            return self._backing.archived

    async def drop_prefix(self, prefix: ArchivedPrefix) -> int:
        with self._lock:
            offset = self._offset()
            index = prefix.size - 1 - offset
            last = self._audit[index].hash if 0 <= index < len(self._audit) else None
            head = offset + len(self._audit) - 1 if self._audit else None
            problem = drop_problem(self._backing.archived, prefix, last, head)
            if problem is not None:
                raise IntegrityError(problem)
            dropped = prefix.size - offset
            del self._audit[:dropped]
            self._backing.archived = prefix
            return dropped
