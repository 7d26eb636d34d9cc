"""StatefulContract: a backend and the reference model, driven by the same random programs.

A hypothesis :class:`~hypothesis.stateful.RuleBasedStateMachine` issues, rotates, reuses and
revokes keys (by key, family and user), disables users, removes members, closes accounts,
changes grants, looks keys up, appends audit events and spends nonces, each step through
``store`` or ``other_store`` at random, and does the same to a fresh
:class:`~agentguard.storage.MemoryStore` (the reference model). Every observable result must
match: return values, errors, lookups, listings, audit entries. One rule races a rotation on
one instance against a revocation of the family (or user) on the other; whatever the
interleaving, the result must be one the model reaches in some order, and no key of the
revoked family may be live afterwards.

Each example works in fresh ids (a random namespace), so the backend need not be emptied
between examples. ``AGENTGUARD_STATEFUL_EXAMPLES`` (default 25) and ``AGENTGUARD_STATEFUL_STEPS``
(default 30) set the size of the search; the programs are derandomized (the same on every
run) unless ``AGENTGUARD_STATEFUL_RANDOM=1``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Coroutine
from datetime import timedelta
from functools import partial
from typing import Any, ClassVar

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from agentguard._keys._format import generate_key, hash_key, new_id
from agentguard._model import Account, AccountStatus, Grants, KeyKind, KeyRecord, User, Workspace
from agentguard.audit._chain import GENESIS_PREV, AuditEntry, verify_chain
from agentguard.storage._memory import MemoryStore
from agentguard.storage._protocols import AuditStore, IntegrityError, KeyStore, ReplayCache
from agentguard.testing._fakes import FakeClock
from agentguard.testing.conformance._audit import audit_event
from agentguard.testing.conformance._base import ContractBase

__all__ = ["Divergence", "StatefulContract", "check_against_model", "stateful_settings"]

_USERS = (0, 0, 1)  # user index -> account index
_WORKSPACES = (0, 1)  # workspace index -> account index
_GRANTS = (Grants(), Grants({"crm": "read"}), Grants({"crm": "write", "projects": "read"}))


class Divergence(AssertionError):
    """The backend's answer differs from the reference model's."""


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name, str(default))
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name} must be an integer, not {text!r}") from None
    if value < 1:
        raise ValueError(f"{name} must be at least 1")
    return value


def stateful_settings(**overrides: Any) -> settings:
    """The settings the contract runs with (environment first, then ``overrides``)."""
    chosen: dict[str, Any] = {
        "max_examples": _env_int("AGENTGUARD_STATEFUL_EXAMPLES", 25),
        "stateful_step_count": _env_int("AGENTGUARD_STATEFUL_STEPS", 30),
        "deadline": None,
        "database": None,
        "derandomize": os.environ.get("AGENTGUARD_STATEFUL_RANDOM") != "1",
        "suppress_health_check": [HealthCheck.too_slow, HealthCheck.filter_too_much],
    }
    chosen.update(overrides)
    return settings(**chosen)


Outcome = tuple[str, object]


class BackendMachine(RuleBasedStateMachine):
    """Drives ``instances`` (two over one backend) and a fresh model with the same steps."""

    instances: ClassVar[tuple[KeyStore, KeyStore]]
    clock: ClassVar[FakeClock]
    keys = Bundle("keys")

    def __init__(self) -> None:
        super().__init__()
        self.model = MemoryStore(clock=self.clock)
        self.ns = new_id("ns")
        self.known: list[KeyRecord] = []
        self.audit_next = 0
        self.audit_prev = GENESIS_PREV
        self.audit_base = 0
        self.audit_base_prev = GENESIS_PREV

    # plumbing: every await runs on the test's event loop

    def _run(self, work: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
        return anyio.from_thread.run(work)

    def _outcome(self, instance: object, method: str, args: Any, kwargs: Any) -> Outcome:
        call = getattr(instance, method)
        try:
            value = self._run(partial(call, *args, **kwargs))
        except IntegrityError:  # a backend may raise a subclass of its own
            return ("error", "IntegrityError")
        except Exception as error:
            return ("error", type(error).__name__)
        if isinstance(value, list):  # listings are compared as sets of records
            value = sorted(value, key=lambda item: str(getattr(item, "id", item)))
        return ("ok", value)

    def same(self, via: int, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call ``method`` on instance ``via`` and on the model; they must agree."""
        got = self._outcome(self.instances[via], method, args, kwargs)
        want = self._outcome(self.model, method, args, kwargs)
        if got != want:
            raise Divergence(f"{method} via instance {via}: backend {got!r}, model {want!r}")
        return got[1]

    def _user(self, index: int) -> str:
        return f"{self.ns}-u{index}"

    def _account(self, index: int) -> str:
        return f"{self.ns}-a{index}"

    def _workspace(self, index: int) -> str:
        return f"{self.ns}-w{index}"

    def _record(self, kind: KeyKind, user: int, family: str | None = None) -> KeyRecord:
        now = self.clock.now()
        ttl = timedelta(hours=1) if kind is KeyKind.ACCESS else timedelta(days=30)
        account = _USERS[user]
        return KeyRecord(
            id=new_id("key"),
            kind=kind,
            key_hash=hash_key(generate_key(kind).reveal()),
            family_id=family or new_id("fam"),
            user_id=self._user(user),
            workspace_id=self._workspace(account),
            account_id=self._account(account),
            created_at=now,
            expires_at=now + ttl,
        )

    def _user_index(self, record: KeyRecord) -> int:
        return int(record.user_id.rsplit("-u", 1)[1])

    @initialize(target=keys)
    def seed(self) -> Any:
        """The directory (two accounts, three users), and a key pair for each user."""
        head: AuditEntry | None = None
        if isinstance(self.instances[0], AuditStore):
            head = self._run(self.instances[0].head)
        if head is not None:
            self.audit_next, self.audit_prev = head.seq + 1, head.hash
        self.audit_base, self.audit_base_prev = self.audit_next, self.audit_prev
        for a in range(2):
            self.same(0, "put_account", Account(id=self._account(a)))
        for w, a in enumerate(_WORKSPACES):
            workspace = Workspace(id=self._workspace(w), account_id=self._account(a))
            self.same(1, "put_workspace", workspace)
        for u, a in enumerate(_USERS):
            user = User(id=self._user(u), account_id=self._account(a), grants=_GRANTS[2])
            self.same(0, "put_user", user)
            member = (self._user(u), self._workspace(a))
            self.same(1, "set_membership", *member, member=True)
        return multiple(*(key for user in range(len(_USERS)) for key in self._issue(user, 0)))

    # keys

    @rule(target=keys, user=st.sampled_from(range(len(_USERS))), via=st.integers(0, 1))
    def issue(self, user: int, via: int) -> Any:
        return multiple(*self._issue(user, via))

    def _issue(self, user: int, via: int) -> list[KeyRecord]:
        family = new_id("fam")
        pair = [
            self._record(KeyKind.ACCESS, user, family),
            self._record(KeyKind.REFRESH, user, family),
        ]
        self.same(via, "insert_keys", pair)
        self.known.extend(pair)
        return pair

    @rule(target=keys, used=keys, via=st.integers(0, 1))
    def rotate(self, used: KeyRecord, via: int) -> Any:
        """Rotation, and reuse when ``used`` was rotated before."""
        pair = [
            self._record(KeyKind.ACCESS, self._user_index(used), used.family_id),
            self._record(KeyKind.REFRESH, self._user_index(used), used.family_id),
        ]
        now = self.clock.now()
        won = self.same(via, "rotate", used.id, pair, now=now)
        if not won:
            return multiple()
        self.known.extend(pair)
        return multiple(*pair)

    @rule(
        record=keys,
        selector=st.sampled_from(["key_id", "family_id", "user_id"]),
        via=st.integers(0, 1),
    )
    def revoke(self, record: KeyRecord, selector: str, via: int) -> None:
        value = {"key_id": record.id, "family_id": record.family_id, "user_id": record.user_id}
        now = self.clock.now()
        chosen = {selector: value[selector]}
        self.same(via, "revoke", **chosen, reason=selector, now=now)

    @rule(record=keys, via=st.integers(0, 1))
    def lookup(self, record: KeyRecord, via: int) -> None:
        self.same(via, "lookup", record.key_hash)

    @rule(user=st.sampled_from(range(len(_USERS))), via=st.integers(0, 1))
    def list_keys(self, user: int, via: int) -> None:
        self.same(via, "list_keys", user_id=self._user(user))

    def _rotatable(self) -> list[KeyRecord]:
        """Refresh keys the model would rotate now: where a race can do harm."""
        found = []
        for key in self.known:
            if key.kind is KeyKind.REFRESH:
                now = self._run(partial(self.model.lookup, key.key_hash))
                if now is not None and now.key.used_at is None and now.key.revoked_at is None:
                    found.append(key)
        return found

    @rule(
        pick=st.integers(0, 63),
        rotate_via=st.integers(0, 1),
        by_user=st.booleans(),
        delay=st.integers(0, 3),
    )
    def race_rotation_against_revocation(
        self, pick: int, rotate_via: int, by_user: bool, delay: int
    ) -> None:
        """Rotate a live refresh key on one instance while the other revokes its family."""
        candidates = self._rotatable()
        if not candidates:
            return
        record = candidates[pick % len(candidates)]
        thief, owner = self.instances[rotate_via], self.instances[1 - rotate_via]
        pair = [
            self._record(KeyKind.ACCESS, self._user_index(record), record.family_id),
            self._record(KeyKind.REFRESH, self._user_index(record), record.family_id),
        ]
        selector = {"user_id": record.user_id} if by_user else {"family_id": record.family_id}
        now = self.clock.now()
        results: dict[str, Any] = {}

        async def race() -> None:
            async def rotate() -> None:
                results["rotated"] = await thief.rotate(record.id, pair, now=now)

            async def revoke() -> None:
                for _ in range(delay):
                    await anyio.lowlevel.checkpoint()
                results["revoked"] = await owner.revoke(**selector, reason="race", now=now)

            async with anyio.create_task_group() as group:
                group.start_soon(rotate)
                group.start_soon(revoke)

        self._run(race)
        model = self.model
        if results["rotated"]:  # the model runs the two in an order that explains the result
            if not self._run(lambda: model.rotate(record.id, pair, now=now)):
                raise Divergence("race: the backend rotated a key the model would not rotate")
            self.known.extend(pair)
        count = self._run(lambda: model.revoke(**selector, reason="race", now=now))
        if not results["rotated"] and self._run(lambda: model.rotate(record.id, pair, now=now)):
            raise Divergence("race: the backend refused a rotation the model allows")
        allowed = {count, count - len(pair)} if results["rotated"] else {count}
        if results["revoked"] not in allowed:
            raise Divergence(f"race: revoke counted {results['revoked']}, model {sorted(allowed)}")
        for key in self.known:
            if key.family_id == record.family_id or key.user_id == record.user_id:
                for via in (0, 1):
                    self.same(via, "lookup", key.key_hash)

    # directory

    @rule(
        user=st.sampled_from(range(len(_USERS))),
        enabled=st.booleans(),
        grants=st.sampled_from(range(3)),
        via=st.integers(0, 1),
    )
    def change_user(self, user: int, enabled: bool, grants: int, via: int) -> None:
        record = User(
            id=self._user(user),
            account_id=self._account(_USERS[user]),
            enabled=enabled,
            grants=_GRANTS[grants],
        )
        self.same(via, "put_user", record)

    @rule(
        user=st.sampled_from(range(len(_USERS))),
        workspace=st.sampled_from(range(2)),
        member=st.booleans(),
        via=st.integers(0, 1),
    )
    def set_membership(self, user: int, workspace: int, member: bool, via: int) -> None:
        ids = (self._user(user), self._workspace(workspace))
        self.same(via, "set_membership", *ids, member=member)

    @rule(account=st.sampled_from(range(2)), closed=st.booleans(), via=st.integers(0, 1))
    def change_account(self, account: int, closed: bool, via: int) -> None:
        status = AccountStatus.CLOSED if closed else AccountStatus.ACTIVE
        record = Account(id=self._account(account), status=status)
        self.same(via, "put_account", record)

    @rule(seconds=st.integers(0, 7200))
    def advance_clock(self, seconds: int) -> None:
        self.clock.advance(seconds)

    # audit and replay (when the backend implements them)

    @precondition(lambda self: isinstance(self.instances[0], AuditStore))
    @rule(count=st.integers(1, 3), via=st.integers(0, 1))
    def append(self, count: int, via: int) -> None:
        events = [audit_event(self.clock, self.audit_next + i) for i in range(count)]
        backend: AuditStore = self.instances[via]  # type: ignore[assignment]
        entries: list[AuditEntry] = self._run(lambda: backend.append(events))
        modelled: list[AuditEntry] = self._run(lambda: self.model.append(events))
        strip = [{k: v for k, v in e.event().items() if k not in ("seq", "prev")} for e in entries]
        want = [{k: v for k, v in e.event().items() if k not in ("seq", "prev")} for e in modelled]
        if strip != want or [e.seq for e in entries] != list(
            range(self.audit_next, self.audit_next + count)
        ):
            raise Divergence(
                f"append via instance {via}: {entries!r} is not the next {count} events"
            )
        if verify_chain(entries, prev=self.audit_prev) is not None:
            raise Divergence(f"append via instance {via} does not extend the head it should")
        self.audit_next, self.audit_prev = entries[-1].seq + 1, entries[-1].hash

    @precondition(lambda self: isinstance(self.instances[0], ReplayCache))
    @rule(nonce=st.integers(0, 3), ttl=st.integers(1, 600), via=st.integers(0, 1))
    def spend_nonce(self, nonce: int, ttl: int, via: int) -> None:
        key = f"{self.ns}:{nonce}".encode()
        # Half a second off the clock's whole-second steps: the exact instant of expiry is
        # the backend's to decide (the contract says "after expires_at ... may be forgotten").
        until = self.clock.now() + timedelta(seconds=ttl, milliseconds=500)
        self.same(via, "check_and_store", key, until)

    @rule(via=st.integers(0, 1))
    def observe_everything(self, via: int) -> None:
        for key in self.known:
            self.same(via, "lookup", key.key_hash)
        for account in range(2):
            self.same(via, "list_users", self._account(account))
        for user in range(len(_USERS)):
            for workspace in range(2):
                ids = (self._user(user), self._workspace(workspace))
                self.same(via, "is_member", *ids)
        if isinstance(self.instances[via], AuditStore):
            store: AuditStore = self.instances[via]  # type: ignore[assignment]
            entries: list[AuditEntry] = self._run(lambda: store.read(self.audit_base))
            seqs = [e.seq for e in entries]
            if seqs != list(range(self.audit_base, self.audit_next)):
                raise Divergence(f"audit read via instance {via}: seqs {seqs}")
            if verify_chain(entries, prev=self.audit_base_prev) is not None:
                raise Divergence(f"audit read via instance {via}: the entries do not chain")


def _bound(store: KeyStore, other_store: KeyStore, clock: FakeClock) -> type[BackendMachine]:
    class Bound(BackendMachine):
        pass

    Bound.instances = (store, other_store)
    Bound.clock = clock
    return Bound


async def check_against_model(
    store: KeyStore, other_store: KeyStore, clock: FakeClock, *, config: settings | None = None
) -> None:
    """Run the state machine on two instances over one backend; raises on any divergence."""
    machine = _bound(store, other_store, clock)
    run = partial(run_state_machine_as_test, machine, settings=config or stateful_settings())
    await anyio.to_thread.run_sync(run)


class StatefulContract(ContractBase):
    """Subclass with ``store`` and ``other_store``: two instances of one KeyStore backend.

    Audit and replay steps run too when the store implements those protocols.
    """

    store_type: ClassVar[type[KeyStore]]
    """Set it to your backend's class: ``mypy --strict`` checks it against ``KeyStore``."""

    async def test_backend_matches_the_reference_model(
        self, store: KeyStore, other_store: KeyStore, clock: FakeClock
    ) -> None:
        await check_against_model(store, other_store, clock)
