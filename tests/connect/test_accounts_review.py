"""Regressions from the security review of issue 21 (connected accounts): the refresh lease's
deadline never drops a rotated refresh token (finding 4), a lease too short for the vendor's
timeout is refused, a refresh answer without ``scope`` keeps the scopes granted before
(finding 11), and a connection that no longer parses is replaced by a reconnect."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import anyio
import pytest

from agentguard._model import ConnectedAccount
from agentguard._secret import Secret
from agentguard.config import SettingsError, load_settings
from agentguard.connect import ConnectedAccounts, VendorClient, VendorTokens
from agentguard.credentials import KeyRing
from agentguard.errors import BadGateway, CorruptRecord, Reason, UsageError
from agentguard.testing import FakeClock
from tests.connect.accounts_fakes import DictStore, StubVendor, principal, token, tokens_for

pytestmark = pytest.mark.anyio

MARGIN = "agentguard.connect._refresh.LEASE_MARGIN"


class SlowWrites(DictStore):
    """A store whose compare-and-set takes ``delay`` seconds (a loaded database)."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    async def update_connection(self, record: ConnectedAccount, *, version: int) -> bool:
        await anyio.sleep(self.delay)
        return await super().update_connection(record, version=version)


async def test_a_rotated_refresh_token_is_saved_even_after_the_lease_runs_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The reviewer's PoC, with the write (not the vendor) being slow: the vendor has rotated
    and answered in time, the write outlasts the lease; it must still land."""
    monkeypatch.setattr(MARGIN, 0.05)
    clock = FakeClock()
    store = SlowWrites(delay=0.5)
    vendor = StubVendor(clock)
    accounts = ConnectedAccounts(
        store, KeyRing.generate(), {"crm": vendor}, clock=clock, lease_seconds=0.3
    )
    await accounts.connect("crm", "alice", tokens_for(clock))
    clock.advance(3600 - 10)
    with anyio.fail_after(5):
        got = await accounts.token_for(principal("alice", clock), "crm")
    [issued] = vendor.issued
    assert got == issued.access_token
    stored = accounts.sealer.open(store.rows[("crm", "alice")], "refresh")
    assert stored == issued.refresh_token, "the rotated refresh token was dropped"
    assert store.leases == {}


@pytest.mark.parametrize("expired", [False, True], ids=["still-valid", "expired"])
async def test_a_vendor_slower_than_the_lease_allows_is_abandoned_before_the_lease_ends(
    monkeypatch: pytest.MonkeyPatch, expired: bool
) -> None:
    monkeypatch.setattr(MARGIN, 0.5)
    clock = FakeClock()
    store = DictStore()
    vendor = StubVendor(clock)

    async def stall() -> None:
        await anyio.sleep(3)

    vendor.before_answer = stall
    accounts = ConnectedAccounts(
        store, KeyRing.generate(), {"crm": vendor}, clock=clock, lease_seconds=1.0
    )
    tokens = tokens_for(clock)
    await accounts.connect("crm", "alice", tokens)
    clock.advance(3600 if expired else 3600 - 10)
    started = time.monotonic()
    with anyio.fail_after(2.5):
        if expired:
            with pytest.raises(BadGateway) as failed:
                await accounts.token_for(principal("alice", clock), "crm")
            assert failed.value.reason is Reason.VENDOR_UNAVAILABLE
        else:
            got = await accounts.token_for(principal("alice", clock), "crm")
            assert got == tokens.access_token
    assert time.monotonic() - started < 0.9  # the vendor's share of the lease: 1.0 - 0.5
    assert vendor.issued == [] and store.rows[("crm", "alice")].version == 1
    assert store.leases == {}


@pytest.mark.parametrize(
    ("timeout", "lease", "refused"),
    [(10.0, 14.9, True), (10.0, 15.0, False), (None, 4.9, True), (None, 5.0, False)],
)
def test_a_lease_shorter_than_the_vendor_timeout_and_the_margin_is_refused(
    timeout: float | None, lease: float, refused: bool
) -> None:
    vendor = StubVendor(FakeClock())
    if timeout is not None:
        vendor.timeout = timeout  # type: ignore[attr-defined]

    def build() -> ConnectedAccounts:
        return ConnectedAccounts(
            DictStore(), KeyRing.generate(), {"crm": vendor}, lease_seconds=lease
        )

    if refused:
        with pytest.raises(UsageError, match="lease_seconds must be at least"):
            build()
    else:
        build()


async def test_the_vendor_clients_timeout_sets_the_shortest_lease() -> None:
    config = StubVendor(FakeClock()).config
    vendor = VendorClient("crm", config, client_secret=Secret(token("cs")), timeout=20.0)
    try:
        with pytest.raises(UsageError, match="at least 25"):
            ConnectedAccounts(DictStore(), KeyRing.generate(), {"crm": vendor}, lease_seconds=24)
        ConnectedAccounts(DictStore(), KeyRing.generate(), {"crm": vendor}, lease_seconds=25)
    finally:
        await vendor.aclose()


CONNECTED = """\
public_origin = "https://gw.example.com"

[[services]]
name = "crm"
base_url = "https://api.crm.example/v2"
credentials = "connected"

[services.oauth]
client_id = "agentguard-crm"
authorization_endpoint = "https://auth.crm.example/authorize"
token_endpoint = "https://auth.crm.example/token"
client_auth = "none"

[connect]
lease_seconds = {lease}
"""


def test_the_connect_settings_refuse_a_lease_shorter_than_the_vendor_timeout_and_margin(
    tmp_path: Path,
) -> None:
    path = tmp_path / "agentguard.toml"
    path.write_text(CONNECTED.format(lease=14))
    with pytest.raises(SettingsError) as refused:
        load_settings(path, environ={})
    assert str(refused.value).startswith(f"{path}:15: connect.lease_seconds"), refused.value
    assert "at least 15 seconds" in str(refused.value)
    path.write_text(CONNECTED.format(lease=15))
    assert load_settings(path, environ={}).connect.lease_seconds == 15


@dataclass(frozen=True)
class Answer(VendorTokens):
    """VendorTokens with the flag the token response parser sets (RFC 6749 §5.1: ``scope``
    may be omitted when it is unchanged)."""

    scope_given: bool = True


@pytest.mark.parametrize(
    ("given", "answered", "kept"),
    [
        (False, ("contacts.read", "contacts.write", "admin"), ("contacts.read",)),
        (True, ("contacts.read", "deals.read"), ("contacts.read", "deals.read")),
    ],
    ids=["omitted", "sent"],
)
async def test_a_refresh_without_scope_keeps_the_scopes_granted_before(
    given: bool, answered: tuple[str, ...], kept: tuple[str, ...]
) -> None:
    clock = FakeClock()
    store = DictStore()
    vendor = StubVendor(clock)

    async def refresh(refresh_token: Secret) -> VendorTokens:
        return Answer(
            Secret(token("at")),
            Secret(token("rt")),
            clock.now() + timedelta(hours=1),
            answered,  # without scope: the configured scopes, more than the user granted
            scope_given=given,
        )

    vendor.refresh = refresh  # type: ignore[method-assign]
    accounts = ConnectedAccounts(store, KeyRing.generate(), {"crm": vendor}, clock=clock)
    first = tokens_for(clock)
    granted = VendorTokens(
        first.access_token, first.refresh_token, first.expires_at, ("contacts.read",)
    )
    await accounts.connect("crm", "alice", granted)
    clock.advance(3600)
    await accounts.token_for(principal("alice", clock), "crm")
    row = store.rows[("crm", "alice")]
    assert (row.version, row.scopes) == (2, kept)


async def test_a_connection_that_does_not_parse_is_replaced_by_a_reconnect() -> None:
    class OneCorruptRow(DictStore):
        corrupt = True

        async def get_connection(self, service: str, user_id: str) -> ConnectedAccount | None:
            if self.corrupt:
                raise CorruptRecord("a stored connected account does not parse")
            return await super().get_connection(service, user_id)

    clock = FakeClock()
    store = OneCorruptRow()
    accounts = ConnectedAccounts(store, KeyRing.generate(), {"crm": StubVendor(clock)}, clock=clock)
    with pytest.raises(BadGateway) as unreadable:
        await accounts.token_for(principal("alice", clock), "crm")
    assert unreadable.value.reason is Reason.CREDENTIAL_UNAVAILABLE
    tokens = tokens_for(clock)
    await accounts.connect("crm", "alice", tokens)  # overwrites the unreadable row
    store.corrupt = False
    assert await accounts.token_for(principal("alice", clock), "crm") == tokens.access_token
