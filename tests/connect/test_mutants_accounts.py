"""Mutation-round pins for ConnectedAccounts and its refresh flight, on the in-test fakes."""

from __future__ import annotations

from typing import Any

import pytest

from agentguard._secret import Secret
from agentguard.audit import AuditWriter
from agentguard.connect import ConnectedAccounts, ConnectionRequired
from agentguard.connect._errors import VendorRefused, VendorUnavailable
from agentguard.credentials import KeyRing
from agentguard.errors import UsageError
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock
from tests.connect.accounts_fakes import DictStore, StubVendor, principal, tokens_for

pytestmark = pytest.mark.anyio


class LaterUnavailable(VendorUnavailable):
    def __init__(self, seconds: float) -> None:
        super().__init__("crm", "crm: the vendor's token endpoint answered 429")
        self.retry_after = seconds


class Setup:
    def __init__(self, **options: object) -> None:
        self.clock = FakeClock()
        self.store = DictStore()
        self.keyring = KeyRing.generate()
        self.vendor = StubVendor(self.clock)
        self.accounts = ConnectedAccounts(
            self.store,
            self.keyring,
            {"crm": self.vendor},
            clock=self.clock,
            **options,  # type: ignore[arg-type]
        )

    async def token(self, user: str = "alice") -> Secret:
        return await self.accounts.token_for(principal(user, self.clock), "crm")


@pytest.fixture
def setup() -> Setup:
    return Setup()


def test_a_zero_wait_is_allowed_and_a_negative_one_is_not() -> None:
    assert Setup(wait_seconds=0).accounts._flight.wait_seconds == 0
    with pytest.raises(UsageError):
        Setup(wait_seconds=-0.5)


async def test_a_reconnect_inside_a_long_back_off_renews_when_due(setup: Setup) -> None:
    await setup.accounts.connect("crm", "alice", tokens_for(setup.clock))
    setup.clock.advance(3600 - 30)
    setup.vendor.failure = LaterUnavailable(300)  # not asked again for five minutes
    await setup.token()
    assert len(setup.vendor.presented) == 1
    # the human reconnects at once, with tokens short enough to be due in seconds
    await setup.accounts.connect("crm", "alice", tokens_for(setup.clock, lifetime=10))
    setup.vendor.failure = None
    setup.clock.advance(6)
    renewed = await setup.token()
    assert len(setup.vendor.presented) == 2  # the reconnect ended the back-off
    assert renewed == setup.vendor.issued[-1].access_token


class Recorded(Setup):
    def __init__(self, **options: object) -> None:
        self.audit_store = MemoryStore()
        super().__init__(audit=AuditWriter(self.audit_store), **options)

    async def events(self, action: str) -> list[dict[str, Any]]:
        return [e.event() for e in await self.audit_store.read() if e.event()["action"] == action]


async def test_disconnecting_a_broken_connection_revokes_nothing_and_says_nothing_of_it() -> None:
    setup = Recorded()
    await setup.accounts.connect("crm", "alice", tokens_for(setup.clock))
    setup.clock.advance(3600)
    setup.vendor.failure = VendorRefused("crm", "invalid_grant")
    with pytest.raises(ConnectionRequired):
        await setup.token()
    assert await setup.accounts.disconnect("crm", "alice", by="op-jane")
    assert setup.vendor.revoked == []
    [event] = await setup.events("connection.disconnect")
    assert event["detail"] == {"connection_id": event["detail"]["connection_id"], "by": "op-jane"}


async def test_an_empty_client_secret_is_not_named_among_the_secrets_to_scan() -> None:
    setup = Setup()
    setup.vendor.client_secret = Secret("")  # type: ignore[attr-defined]
    tokens = tokens_for(setup.clock)
    await setup.accounts.connect("crm", "alice", tokens)
    token, involved = await setup.accounts.outgoing(principal("alice", setup.clock), "crm")
    assert token == tokens.access_token
    assert involved == (tokens.access_token, tokens.refresh_token)
    assert all(secret.reveal() for secret in involved)
