"""The refresh single flight on in-test fakes: waiting for another instance's renewal, taking
over a vanished holder's lease, losing the compare-and-set, and cancellation mid-renewal."""

from __future__ import annotations

from datetime import timedelta

import anyio
import pytest

from agentguard._model import ConnectedAccount, ConnectionStatus
from agentguard._secret import Secret
from agentguard.connect import ConnectedAccounts, ConnectionRequired, VendorRefused
from agentguard.connect._refresh import lease_name
from agentguard.credentials import KeyRing
from agentguard.errors import BadGateway, Reason
from agentguard.testing import FakeClock
from tests.connect.accounts_fakes import DictStore, StubVendor, principal, token, tokens_for

pytestmark = pytest.mark.anyio

LEASE = lease_name("crm", "alice")


class Flight:
    def __init__(self, wait_seconds: float = 5.0) -> None:
        self.clock = FakeClock()
        self.store = DictStore()
        self.vendor = StubVendor(self.clock)
        self.accounts = ConnectedAccounts(
            self.store,
            KeyRing.generate(),
            {"crm": self.vendor},
            clock=self.clock,
            wait_seconds=wait_seconds,
        )

    async def token(self, user: str = "alice") -> str:
        return (await self.accounts.token_for(principal(user, self.clock), "crm")).reveal()

    def renew_elsewhere(self) -> str:
        """What another instance's refresh writes: version + 1 with new tokens."""
        row = self.store.rows[("crm", "alice")]
        access = token("at")
        renewed = row.model_copy(
            update={
                "version": row.version + 1,
                "expires_at": self.clock.now() + timedelta(hours=1),
                "updated_at": self.clock.now(),
            }
        )
        self.store.rows[("crm", "alice")] = self.accounts.sealer.seal(
            renewed, Secret(access), Secret(token("rt"))
        )
        return access

    def hold_lease_elsewhere(self, seconds: float = 30) -> None:
        self.store.leases[LEASE] = (
            "other-instance/1",
            self.clock.now() + timedelta(seconds=seconds),
        )


def _row(flight: Flight) -> ConnectedAccount:
    return flight.store.rows[("crm", "alice")]


async def test_a_caller_waits_for_the_renewal_another_instance_holds() -> None:
    flight = Flight()
    await flight.accounts.connect("crm", "alice", tokens_for(flight.clock))
    flight.clock.advance(3600 - 30)
    flight.hold_lease_elsewhere()
    got: list[str] = []

    async def call() -> None:
        got.append(await flight.token())

    async with anyio.create_task_group() as group:
        group.start_soon(call)
        await anyio.sleep(0.1)
        assert got == []  # still waiting for the holder
        access = flight.renew_elsewhere()
    assert got == [access]
    assert flight.vendor.presented == []


async def test_a_wait_that_times_out_uses_the_still_valid_token() -> None:
    flight = Flight(wait_seconds=0.2)
    tokens = tokens_for(flight.clock)
    await flight.accounts.connect("crm", "alice", tokens)
    flight.clock.advance(3600 - 30)
    flight.hold_lease_elsewhere()
    with anyio.fail_after(5):
        assert await flight.token() == tokens.access_token.reveal()
    assert flight.vendor.presented == []


async def test_a_wait_that_times_out_on_an_expired_token_is_502() -> None:
    flight = Flight(wait_seconds=0.2)
    await flight.accounts.connect("crm", "alice", tokens_for(flight.clock))
    flight.clock.advance(3600)
    flight.hold_lease_elsewhere()
    with anyio.fail_after(5), pytest.raises(BadGateway) as failed:
        await flight.token()
    assert failed.value.reason is Reason.VENDOR_UNAVAILABLE


async def test_a_vanished_holders_lease_is_taken_over_once_it_runs_out() -> None:
    flight = Flight()
    await flight.accounts.connect("crm", "alice", tokens_for(flight.clock))
    flight.clock.advance(3600)
    flight.hold_lease_elsewhere(seconds=0)  # ran out just now
    [issued_access] = [await flight.token()]
    [issued] = flight.vendor.issued
    assert issued_access == issued.access_token.reveal()
    assert LEASE not in flight.store.leases  # ours, released


async def test_a_disconnect_during_the_wait_is_refused() -> None:
    flight = Flight()
    await flight.accounts.connect("crm", "alice", tokens_for(flight.clock))
    flight.clock.advance(3600 - 30)
    flight.hold_lease_elsewhere()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:

            async def call() -> None:
                with pytest.raises(ConnectionRequired):
                    await flight.token()

            group.start_soon(call)
            await anyio.sleep(0.05)
            del flight.store.rows[("crm", "alice")]


async def test_a_reconnect_during_the_renewal_wins() -> None:
    flight = Flight()
    await flight.accounts.connect("crm", "alice", tokens_for(flight.clock))
    flight.clock.advance(3600)
    new = tokens_for(flight.clock)

    async def reconnect() -> None:
        flight.vendor.before_answer = None
        await flight.accounts.connect("crm", "alice", new)

    flight.vendor.before_answer = reconnect
    assert await flight.token() == new.access_token.reveal()
    assert _row(flight).version == 1  # the renewal's write lost; the new connection stands


async def test_a_disconnect_during_the_renewal_stands_and_the_new_tokens_are_revoked() -> None:
    flight = Flight()
    await flight.accounts.connect("crm", "alice", tokens_for(flight.clock))
    flight.clock.advance(3600)

    async def disconnect() -> None:
        await flight.accounts.disconnect("crm", "alice", by="alice")

    flight.vendor.before_answer = disconnect
    with pytest.raises(ConnectionRequired):
        await flight.token()
    assert flight.store.rows == {}
    [issued] = flight.vendor.issued
    assert ("refresh_token", issued.refresh_token.reveal()) in flight.vendor.revoked  # type: ignore[union-attr]


async def test_invalid_grant_after_another_instance_renewed_uses_its_token() -> None:
    flight = Flight()
    await flight.accounts.connect("crm", "alice", tokens_for(flight.clock))
    flight.clock.advance(3600)
    renewed: list[str] = []

    async def renewed_elsewhere() -> None:
        renewed.append(flight.renew_elsewhere())

    flight.vendor.before_answer = renewed_elsewhere
    flight.vendor.failure = VendorRefused("crm", "invalid_grant")  # the rotated token, reused
    assert await flight.token() == renewed[0]
    assert _row(flight).status is ConnectionStatus.ACTIVE


async def test_a_cancelled_caller_still_saves_the_rotated_refresh_token() -> None:
    flight = Flight()
    await flight.accounts.connect("crm", "alice", tokens_for(flight.clock))
    flight.clock.advance(3600)
    answered = anyio.Event()

    async def slow() -> None:
        await anyio.sleep(0.1)
        answered.set()

    flight.vendor.before_answer = slow
    with anyio.move_on_after(0.02):  # the agent hangs up while the vendor is answering
        await flight.token()
    assert answered.is_set()  # the vendor's answer was awaited, not abandoned
    [issued] = flight.vendor.issued
    stored = _row(flight)
    assert stored.version == 2
    opened = flight.accounts.sealer.open(stored, "refresh")
    assert opened == issued.refresh_token
    assert LEASE not in flight.store.leases


async def test_the_lease_is_per_user_never_per_service() -> None:
    flight = Flight(wait_seconds=0.2)
    for user in ("alice", "bob"):
        await flight.accounts.connect("crm", user, tokens_for(flight.clock))
    flight.clock.advance(3600)
    flight.hold_lease_elsewhere()  # alice's refresh is elsewhere; bob's is not held up
    with anyio.fail_after(5):
        bob = await flight.token("bob")
    [issued] = flight.vendor.issued
    assert bob == issued.access_token.reveal()
    assert lease_name("crm", "bob") != LEASE
