"""The storage contracts. Small async ``typing.Protocol`` classes: implement them structurally.

One class may implement several (``MemoryStore`` implements all five). Each method's docstring
states the guarantee an implementation must give; ``agentguard.testing.conformance`` holds the
tests that check them, which any backend inherits by supplying one fixture.

Time: stores that expire entries take a :class:`~agentguard.Clock` in their constructor;
never read the system time in a store.

Errors: a store raises :class:`IntegrityError` for a write that breaks a stated rule, and
:class:`StorageError` from any method when its backend fails (a lost connection, a closed pool,
a timeout, a closed store), never the driver's own exception: the driver's error may be its
``__cause__``, but the message names no query parameter. A call that breaks the contract itself
(:meth:`KeyStore.revoke` without exactly one selector) raises
:class:`~agentguard.errors.UsageError` before touching the backend: a caller's mistake, not an
outage. The guard turns any other exception a store raises into ``503`` (fail closed); the
contract makes the outage recognisable to every other caller too.
``agentguard.testing.conformance.FailureContract`` checks it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal, NamedTuple, Protocol, runtime_checkable

from agentguard._model import (
    Account,
    CredentialOwner,
    KeyRecord,
    StoredCredential,
    User,
    Workspace,
)
from agentguard.audit._chain import AuditEntry
from agentguard.audit._events import AuditEvent
from agentguard.audit._prefix import ArchivedPrefix
from agentguard.errors import AgentGuardError, UsageError

__all__ = [
    "AuditArchiveStore",
    "AuditStore",
    "CredentialStore",
    "DirectoryStore",
    "IntegrityError",
    "KeyLookup",
    "KeyStore",
    "ReplayCache",
    "RevokeSelector",
    "StorageError",
    "revoke_selector",
]


class StorageError(AgentGuardError):
    """Base of errors a store raises on purpose; on its own, "the backend failed" (an outage)."""


class IntegrityError(StorageError):
    """A write would break a rule of the contract (unknown owner, duplicate key, ...)."""


_SelectorName = Literal["key_id", "family_id", "user_id"]


class RevokeSelector(NamedTuple):
    """The one thing a :meth:`KeyStore.revoke` call selects keys by."""

    name: _SelectorName
    value: str


def revoke_selector(
    *, key_id: str | None, family_id: str | None, user_id: str | None
) -> RevokeSelector:
    """The one selector of a :meth:`KeyStore.revoke` call, checked before any storage work.

    Raises :class:`~agentguard.errors.UsageError` (a ``ValueError``) unless exactly one of the
    three is given, as the contract requires. Every backend calls it first and keeps only its
    storage-specific work.
    """
    named: tuple[tuple[_SelectorName, str | None], ...] = (
        ("key_id", key_id),
        ("family_id", family_id),
        ("user_id", user_id),
    )
    given = [RevokeSelector(name, value) for name, value in named if value is not None]
    if len(given) != 1:
        raise UsageError("revoke takes exactly one of key_id, family_id, user_id")
    return given[0]


class KeyLookup(NamedTuple):
    """Everything needed to decide on a key, fetched in one round trip.

    ``user`` and ``account`` are ``None`` when they no longer exist; ``member`` says whether the
    user still belongs to the key's workspace.
    """

    key: KeyRecord
    user: User | None
    account: Account | None
    member: bool


@runtime_checkable
class DirectoryStore(Protocol):
    """Accounts, workspaces, users, memberships and grants.

    Guarantees: ``put_*`` replace a record with the same id (an update is a put of the changed
    record) and are visible to every later read on every instance. ``put_workspace`` and
    ``put_user`` raise :class:`IntegrityError` when the account does not exist or the record
    already exists under another account (a user or workspace never changes account);
    ``set_membership`` raises it when the user or workspace does not exist or they belong to
    different accounts.
    """

    async def put_account(self, account: Account) -> None: ...

    async def put_workspace(self, workspace: Workspace) -> None: ...

    async def put_user(self, user: User) -> None: ...

    async def set_membership(self, user_id: str, workspace_id: str, *, member: bool) -> None: ...

    async def get_account(self, account_id: str) -> Account | None: ...

    async def get_workspace(self, workspace_id: str) -> Workspace | None: ...

    async def get_user(self, user_id: str) -> User | None: ...

    async def is_member(self, user_id: str, workspace_id: str) -> bool: ...

    async def list_users(self, account_id: str | None = None) -> list[User]: ...


@runtime_checkable
class KeyStore(DirectoryStore, Protocol):
    """Key records (hashes only), looked up live, rotated atomically, revoked by selector.

    A ``KeyStore`` is also a :class:`DirectoryStore`, because :meth:`lookup` joins a key with
    its user, account and membership in one round trip.
    """

    async def insert_keys(self, records: Sequence[KeyRecord]) -> None:
        """Insert all ``records`` or none. A duplicate id or hash raises IntegrityError."""
        ...

    async def lookup(self, key_hash: bytes) -> KeyLookup | None:
        """The key with this SHA-256 hash and its live owner facts, or ``None``. One round trip.

        The key is reported as it stands: a key of a revoked family (see :meth:`revoke`) has
        the family's ``revoked_at`` and ``revoked_reason`` unless it was revoked earlier itself,
        even if it was inserted after the family was revoked.
        """
        ...

    async def rotate(self, used_id: str, new: Sequence[KeyRecord], *, now: datetime) -> bool:
        """Exchange refresh key ``used_id`` for ``new``, atomically.

        If the key exists, is a refresh key, is neither used nor revoked, and its family has
        not been revoked: set its ``used_at`` to ``now``, insert ``new``, return ``True``.
        Otherwise change nothing and return ``False``. Of any number of concurrent calls for
        one ``used_id`` (from any number of instances), at most one returns ``True``. A call
        that runs concurrently with a revocation of the family may still return ``True``; the
        keys it inserted are then revoked with the family (see :meth:`revoke`).
        """
        ...

    async def revoke(
        self,
        *,
        key_id: str | None = None,
        family_id: str | None = None,
        user_id: str | None = None,
        reason: str,
        now: datetime,
    ) -> int:
        """Revoke the unrevoked keys that match exactly one selector; return how many.

        Passing zero or several selectors raises :class:`~agentguard.errors.UsageError` (a
        ``ValueError``; :func:`revoke_selector` checks it). Already revoked keys keep
        their first revocation time and reason; a key of an already revoked family counts as
        revoked.

        ``family_id`` and ``user_id`` revoke whole families, for good: the family, or every
        family that has a key of the user when the call runs. Once the call returns, every key
        of those families, including keys that any instance's :meth:`rotate` or
        :meth:`insert_keys` adds to them afterwards or concurrently, reads as revoked in
        :meth:`lookup` and :meth:`list_keys` (with the family's time and reason) and cannot
        :meth:`rotate`. Families created later (keys issued to the user afterwards) are not
        affected. SQL backends keep a table of revoked families that lookup and rotation read;
        updating the key rows alone loses to a rotation whose new rows the update cannot see.
        The count is of the key records this call changed. ``key_id`` revokes one key only.
        """
        ...

    async def list_keys(
        self, *, user_id: str | None = None, family_id: str | None = None
    ) -> list[KeyRecord]:
        """Key records in insertion order (oldest first), optionally filtered.

        Keys of revoked families read as revoked.
        """
        ...


@runtime_checkable
class ReplayCache(Protocol):
    """One-time use of nonces and proof ids across every instance."""

    async def check_and_store(self, key: bytes, expires_at: datetime) -> bool:
        """Store ``key`` until ``expires_at``; ``True`` if it was absent (or already expired).

        Atomic: of concurrent calls with one key, exactly one returns ``True``. After
        ``expires_at`` (by the store's clock) the key may be forgotten.
        """
        ...


@runtime_checkable
class CredentialStore(Protocol):
    """Ciphertext of real third-party credentials. The store never sees plaintext."""

    async def put_credential(self, credential: StoredCredential) -> None:
        """Insert or replace the credential for (service, owner_kind, owner_id)."""
        ...

    async def get_credential(
        self, service: str, owner_kind: CredentialOwner, owner_id: str
    ) -> StoredCredential | None: ...

    async def delete_credential(
        self, service: str, owner_kind: CredentialOwner, owner_id: str
    ) -> bool: ...

    async def list_credentials(self, service: str | None = None) -> list[StoredCredential]: ...


@runtime_checkable
class AuditStore(Protocol):
    """An append-only, hash-chained log with a single head."""

    async def append(self, events: Sequence[AuditEvent]) -> list[AuditEntry]:
        """Seal and append ``events`` after the current head, atomically and contiguously.

        Each event is sealed (:func:`agentguard.audit.seal`) at the next sequence number with
        the previous entry's hash. Concurrent appends from any number of writers and instances
        produce one linear chain: no gaps, no forks. Returns once durable.
        """
        ...

    async def read(self, start: int = 0, stop: int | None = None) -> list[AuditEntry]:
        """Entries with ``start <= seq < stop`` in order (``stop=None``: to the head)."""
        ...

    async def head(self) -> AuditEntry | None:
        """The newest entry, or ``None`` for an empty log."""
        ...


@runtime_checkable
class AuditRowStore(Protocol):
    """An :class:`AuditStore` that hands over its audit rows as stored (optional; SQL stores).

    :func:`~agentguard.audit._verify_store.verify_store` uses it when a store has it and
    :meth:`AuditStore.read` otherwise: the verifier then checks pages of rows without building
    an :class:`~agentguard.audit.AuditEntry` per event. Not part of the public storage API.
    """

    async def read_rows(self, start: int, stop: int) -> Sequence[Sequence[object]]:
        """The rows ``(seq, hash, body)`` with ``start <= seq < stop``, in order, as the driver
        gave them: no conversion, so a column rewritten with another type comes back as it is
        stored. ``agentguard.audit._rows.entry_from_row`` of each row is exactly what
        ``read(start, stop)`` returns (one statement, so one consistent snapshot).
        """
        ...


@runtime_checkable
class AuditArchiveStore(Protocol):
    """An :class:`AuditStore` that can drop an archived prefix of its log (optional).

    ``agentguard audit archive`` checks for it with ``isinstance`` and says plainly when a store
    lacks it; a store without it keeps every event forever. Once a prefix ``[0, n)`` is
    dropped, :meth:`AuditStore.read` returns entries from ``n`` on (a ``start`` below ``n``
    reads from ``n``), :meth:`AuditStore.head` and :meth:`AuditStore.append` work as before, and
    :meth:`archived_prefix` returns what the store kept of the dropped events.
    """

    async def archived_prefix(self) -> ArchivedPrefix | None:
        """What the store kept of the events it dropped, or ``None`` if it dropped none."""
        ...

    async def drop_prefix(self, prefix: ArchivedPrefix) -> int:
        """Delete the entries with ``seq < prefix.size`` and keep ``prefix``; return how many.

        Atomic: either the rows are gone and ``prefix`` is stored, or nothing changed. Raises
        :class:`IntegrityError`, changing nothing, unless the entry at ``prefix.size - 1`` is
        still in the log with hash ``prefix.last_hash``, at least one entry after it remains
        (the head always stays, so appends continue the chain), and ``prefix`` extends the
        prefix kept before (its boundaries start with the old ones).
        """
        ...
