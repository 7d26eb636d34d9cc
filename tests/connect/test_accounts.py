"""ConnectedAccounts on in-test fakes: sealed storage, a fresh token per call, renewal ahead of
expiry, broken connections, vendor outages, tampered rows, disconnect, and no token anywhere
it must not be."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from agentguard._model import ConnectionStatus
from agentguard.audit._writer import AuditWriter
from agentguard.connect import (
    ConnectedAccounts,
    ConnectionRequired,
    VendorRefused,
    VendorTokens,
    VendorUnavailable,
)
from agentguard.connect._refresh import refresh_due
from agentguard.credentials import KeyRing
from agentguard.errors import BadGateway, Reason, UsageError
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock
from tests.connect.accounts_fakes import DictStore, StubVendor, principal, tokens_for

pytestmark = pytest.mark.anyio

CONNECT = "https://gw.example/connect/crm"


class Setup:
    def __init__(self, **options: Any) -> None:
        self.clock = FakeClock()
        self.store = DictStore()
        self.audit_store = MemoryStore(clock=self.clock)
        self.keyring = KeyRing.generate()
        self.vendor = StubVendor(self.clock)
        self.accounts = self.make(**options)

    def make(self, **options: Any) -> ConnectedAccounts:
        return ConnectedAccounts(
            self.store,
            self.keyring,
            {"crm": self.vendor},
            clock=self.clock,
            audit=AuditWriter(self.audit_store),
            connect_uri=lambda service: f"https://gw.example/connect/{service}",
            **options,
        )

    async def events(self) -> list[dict[str, Any]]:
        return [entry.event() for entry in await self.audit_store.read()]

    async def token(self, user: str = "alice") -> str:
        return (await self.accounts.token_for(principal(user, self.clock), "crm")).reveal()


@pytest.fixture
def setup() -> Setup:
    return Setup()


async def test_connect_stores_the_tokens_sealed_and_audits_without_them(setup: Setup) -> None:
    tokens = tokens_for(setup.clock)
    record = await setup.accounts.connect("crm", "alice", tokens)
    assert record.id.startswith("conn_") and record.version == 1
    assert record.status is ConnectionStatus.ACTIVE
    assert record.key_id == setup.keyring.primary
    stored = setup.store.rows[("crm", "alice")]
    assert stored == record
    for value in (tokens.access_token.reveal(), tokens.refresh_token.reveal()):  # type: ignore[union-attr]
        assert value.encode() not in stored.access_token
        assert value.encode() not in (stored.refresh_token or b"")
        assert value not in repr(stored)
    [event] = await setup.events()
    assert event["action"] == "connection.connect"
    assert event["service"] == "crm" and event["actor"]["user"] == "alice"
    assert event["detail"] == {"connection_id": record.id, "scopes": "contacts.read contacts.write"}


async def test_a_fresh_token_is_handed_out_without_asking_the_vendor(setup: Setup) -> None:
    tokens = tokens_for(setup.clock)
    await setup.accounts.connect("crm", "alice", tokens)
    setup.clock.advance(3600 - 61)
    assert await setup.token() == tokens.access_token.reveal()
    assert setup.vendor.presented == []


async def test_a_token_without_expiry_is_never_renewed(setup: Setup) -> None:
    tokens = tokens_for(setup.clock, lifetime=None)
    await setup.accounts.connect("crm", "alice", tokens)
    setup.clock.advance(timedelta(days=400))
    assert await setup.token() == tokens.access_token.reveal()
    assert setup.vendor.presented == []


@pytest.mark.parametrize("elapsed", [3600 - 60, 3600 - 1, 3600, 7200])
async def test_a_stale_or_expired_token_is_renewed_once(setup: Setup, elapsed: int) -> None:
    tokens = tokens_for(setup.clock)
    record = await setup.accounts.connect("crm", "alice", tokens)
    setup.clock.advance(elapsed)
    renewed = await setup.token()
    [issued] = setup.vendor.issued
    assert renewed == issued.access_token.reveal() != tokens.access_token.reveal()
    assert setup.vendor.presented == [tokens.refresh_token.reveal()]  # type: ignore[union-attr]
    stored = setup.store.rows[("crm", "alice")]
    assert (stored.id, stored.version) == (record.id, 2)
    assert stored.expires_at == issued.expires_at and stored.updated_at == setup.clock.now()
    assert stored.created_at == record.created_at
    assert await setup.token() == renewed  # fresh now: no second refresh
    assert len(setup.vendor.presented) == 1
    refresh = (await setup.events())[-1]
    assert refresh["action"] == "connection.refresh"
    assert refresh["detail"] == {
        "connection_id": record.id, "version": 2, "rotated": True, "expires_in": 3600,
    }  # fmt: skip


async def test_a_rotated_refresh_token_is_the_one_presented_next(setup: Setup) -> None:
    await setup.accounts.connect("crm", "alice", tokens_for(setup.clock))
    setup.clock.advance(3600)
    await setup.token()
    setup.clock.advance(3600)
    await setup.token()
    first, second = setup.vendor.issued
    assert setup.vendor.presented[1] == first.refresh_token.reveal()  # type: ignore[union-attr]
    assert second.refresh_token is not None


async def test_a_response_without_refresh_token_keeps_the_previous_one(setup: Setup) -> None:
    tokens = tokens_for(setup.clock)
    await setup.accounts.connect("crm", "alice", tokens)
    setup.vendor.rotate = False
    for _ in range(3):
        setup.clock.advance(3600)
        await setup.token()
    assert setup.vendor.presented == [tokens.refresh_token.reveal()] * 3  # type: ignore[union-attr]
    assert (await setup.events())[-1]["detail"]["rotated"] is False


async def test_short_lived_tokens_are_renewed_at_half_life_not_on_every_call(
    setup: Setup,
) -> None:
    tokens = tokens_for(setup.clock, lifetime=30)  # shorter than refresh_ahead (60s)
    record = await setup.accounts.connect("crm", "alice", tokens)
    assert not refresh_due(record, setup.clock.now() + timedelta(seconds=14), 60)
    assert refresh_due(record, setup.clock.now() + timedelta(seconds=15), 60)
    setup.clock.advance(10)
    assert await setup.token() == tokens.access_token.reveal()
    assert setup.vendor.presented == []


async def test_no_connection_is_refused_connection_required_with_the_link(setup: Setup) -> None:
    with pytest.raises(ConnectionRequired) as refused:
        await setup.token()
    error = refused.value
    assert (error.status, error.reason) == (403, Reason.CONNECTION_REQUIRED)
    assert error.service == "crm" and error.connect_uri == CONNECT
    body = error.body()
    assert body["error"] == "connection_required" and body["connect_uri"] == CONNECT
    assert body["service"] == "crm" and body["reason"] == "connection_required"


async def test_another_users_connection_is_never_used(setup: Setup) -> None:
    await setup.accounts.connect("crm", "bob", tokens_for(setup.clock))
    with pytest.raises(ConnectionRequired):
        await setup.token("alice")


async def test_invalid_grant_marks_the_connection_broken(setup: Setup) -> None:
    record = await setup.accounts.connect("crm", "alice", tokens_for(setup.clock))
    setup.clock.advance(3600 - 30)
    setup.vendor.failure = VendorRefused("crm", "invalid_grant")
    with pytest.raises(ConnectionRequired) as refused:
        await setup.token()
    assert refused.value.reason is Reason.CONNECTION_BROKEN
    assert refused.value.connect_uri == CONNECT
    assert refused.value.body()["reason"] == "connection_broken"
    stored = setup.store.rows[("crm", "alice")]
    assert stored.status is ConnectionStatus.BROKEN and stored.version == 2
    assert stored.access_token == b"" and stored.refresh_token is None
    event = (await setup.events())[-1]
    assert (event["action"], event["decision"], event["reason"]) == (
        "connection.broken", "deny", "connection_broken",
    )  # fmt: skip
    assert event["detail"] == {"connection_id": record.id, "error": "invalid_grant"}
    setup.vendor.failure = None
    with pytest.raises(ConnectionRequired) as again:  # no second try at the vendor
        await setup.token()
    assert again.value.reason is Reason.CONNECTION_BROKEN
    assert len(setup.vendor.presented) == 1
    await setup.accounts.connect("crm", "alice", tokens_for(setup.clock))  # reconnect works
    assert await setup.token()


@pytest.mark.parametrize(
    "failure",
    [VendorUnavailable("crm", "crm: ConnectTimeout"), VendorRefused("crm", "invalid_client")],
)
async def test_a_failed_renewal_keeps_using_a_still_valid_token(
    setup: Setup, failure: Exception
) -> None:
    tokens = tokens_for(setup.clock)
    await setup.accounts.connect("crm", "alice", tokens)
    setup.clock.advance(3600 - 30)
    setup.vendor.failure = failure
    assert await setup.token() == tokens.access_token.reveal()
    assert setup.store.rows[("crm", "alice")].version == 1
    assert setup.store.leases == {}  # released


@pytest.mark.parametrize(
    "failure",
    [VendorUnavailable("crm", "crm: ConnectTimeout"), VendorRefused("crm", "server_error")],
)
async def test_a_failed_renewal_of_an_expired_token_is_502(
    setup: Setup, failure: Exception
) -> None:
    await setup.accounts.connect("crm", "alice", tokens_for(setup.clock))
    setup.clock.advance(3600)
    setup.vendor.failure = failure
    with pytest.raises(BadGateway) as failed:
        await setup.token()
    assert failed.value.reason is Reason.VENDOR_UNAVAILABLE and failed.value.status == 502
    assert setup.store.rows[("crm", "alice")].status is ConnectionStatus.ACTIVE


async def test_an_expired_token_without_refresh_token_is_broken(setup: Setup) -> None:
    tokens = tokens_for(setup.clock, refresh=False)
    await setup.accounts.connect("crm", "alice", tokens)
    setup.clock.advance(3600 - 30)  # inside refresh_ahead, but nothing can renew it: used
    assert await setup.token() == tokens.access_token.reveal()
    setup.clock.advance(30)
    with pytest.raises(ConnectionRequired) as refused:
        await setup.token()
    assert refused.value.reason is Reason.CONNECTION_BROKEN
    assert setup.vendor.presented == []
    assert (await setup.events())[-1]["detail"]["error"] == "no_refresh_token"


async def test_a_row_moved_to_another_user_does_not_open(setup: Setup) -> None:
    record = await setup.accounts.connect("crm", "alice", tokens_for(setup.clock))
    moved = record.model_copy(update={"user_id": "mallory"})
    setup.store.rows[("crm", "mallory")] = moved
    with pytest.raises(ConnectionRequired) as refused:
        await setup.token("mallory")
    assert refused.value.reason is Reason.CONNECTION_BROKEN
    assert refused.value.connect_uri == CONNECT
    event = (await setup.events())[-1]
    assert (event["action"], event["decision"], event["reason"]) == (
        "connection.broken", "deny", "connection_broken",
    )  # fmt: skip
    assert (event["actor"]["user"], event["service"]) == ("mallory", "crm")
    assert event["detail"] == {
        "connection_id": record.id, "error": "unopenable", "cause": "does_not_decrypt",
    }  # fmt: skip


async def test_a_row_moved_to_another_service_does_not_open(setup: Setup) -> None:
    record = await setup.accounts.connect("crm", "alice", tokens_for(setup.clock))
    accounts = ConnectedAccounts(
        setup.store, setup.keyring, {"mail": setup.vendor}, clock=setup.clock
    )
    setup.store.rows[("mail", "alice")] = record.model_copy(update={"service": "mail"})
    with pytest.raises(ConnectionRequired) as refused:
        await accounts.token_for(principal("alice", setup.clock), "mail")
    assert refused.value.reason is Reason.CONNECTION_BROKEN


async def test_a_refresh_token_in_the_access_slot_does_not_open(setup: Setup) -> None:
    record = await setup.accounts.connect("crm", "alice", tokens_for(setup.clock))
    assert record.refresh_token is not None
    swapped = record.model_copy(update={"access_token": record.refresh_token})
    setup.store.rows[("crm", "alice")] = swapped
    with pytest.raises(ConnectionRequired) as refused:
        await setup.token()
    assert refused.value.reason is Reason.CONNECTION_BROKEN


@pytest.mark.parametrize("field", ["id", "created_at", "key_id"])
async def test_an_edited_bound_field_does_not_open(setup: Setup, field: str) -> None:
    record = await setup.accounts.connect("crm", "alice", tokens_for(setup.clock))
    value = {
        "id": "conn_other0000000001",
        "created_at": record.created_at + timedelta(microseconds=1),
        "key_id": "kek-9",
    }[field]
    setup.store.rows[("crm", "alice")] = record.model_copy(update={field: value})
    with pytest.raises(ConnectionRequired) as refused:
        await setup.token()
    assert refused.value.reason is Reason.CONNECTION_BROKEN
    cause = "key_missing" if field == "key_id" else "does_not_decrypt"
    assert (await setup.events())[-1]["detail"]["cause"] == cause


async def test_a_row_filed_under_another_user_is_refused(setup: Setup) -> None:
    record = await setup.accounts.connect("crm", "bob", tokens_for(setup.clock))
    setup.store.rows[("crm", "alice")] = record  # the store answers with bob's row
    with pytest.raises(BadGateway) as refused:
        await setup.token("alice")
    assert refused.value.reason is Reason.CREDENTIAL_UNAVAILABLE


async def test_a_row_from_another_key_ring_does_not_open(setup: Setup) -> None:
    await setup.accounts.connect("crm", "alice", tokens_for(setup.clock))
    stranger = ConnectedAccounts(
        setup.store, KeyRing.generate(), {"crm": setup.vendor}, clock=setup.clock
    )
    with pytest.raises(ConnectionRequired) as refused:
        await stranger.token_for(principal("alice", setup.clock), "crm")
    assert refused.value.reason is Reason.CONNECTION_BROKEN


async def test_a_service_without_oauth_client_is_502(setup: Setup) -> None:
    with pytest.raises(BadGateway) as refused:
        await setup.accounts.token_for(principal("alice", setup.clock), "mail")
    assert "no OAuth client" in refused.value.description


async def test_disconnect_deletes_revokes_and_audits(setup: Setup) -> None:
    tokens = tokens_for(setup.clock)
    record = await setup.accounts.connect("crm", "alice", tokens)
    assert await setup.accounts.disconnect("crm", "alice", by="alice") is True
    assert setup.store.rows == {}
    assert setup.vendor.revoked == [
        ("refresh_token", tokens.refresh_token.reveal()),  # type: ignore[union-attr]
        ("access_token", tokens.access_token.reveal()),
    ]
    event = (await setup.events())[-1]
    assert event["action"] == "connection.disconnect"
    assert event["detail"] == {
        "connection_id": record.id, "by": "alice",
        "revoke_refresh": "revoked", "revoke_access": "revoked",
    }  # fmt: skip
    with pytest.raises(ConnectionRequired):  # effective on the next call
        await setup.token()
    assert await setup.accounts.disconnect("crm", "alice", by="alice") is False


async def test_a_vendor_failure_on_disconnect_does_not_undo_the_delete(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    await setup.accounts.connect("crm", "alice", tokens_for(setup.clock))
    setup.vendor.revoke_failure = VendorUnavailable("crm", "crm: ConnectError")
    with caplog.at_level(logging.WARNING, "agentguard.connect"):
        assert await setup.accounts.disconnect("crm", "alice", by="op:ops") is True
    assert setup.store.rows == {}
    detail = (await setup.events())[-1]["detail"]
    assert detail["revoke_refresh"] == "unavailable" and detail["by"] == "op:ops"
    assert "VendorUnavailable" in caplog.text


async def test_a_vendor_without_revocation_is_asked_once(setup: Setup) -> None:
    await setup.accounts.connect("crm", "alice", tokens_for(setup.clock))
    setup.vendor.revocation = False
    assert await setup.accounts.disconnect("crm", "alice", by="alice")
    assert (await setup.events())[-1]["detail"]["revoke_refresh"] == "unsupported"
    assert "revoke_access" not in (await setup.events())[-1]["detail"]


async def test_reconnecting_keeps_the_replaced_tokens_by_default(setup: Setup) -> None:
    """A vendor that revokes the whole grant on one token's revocation (Google) would kill
    the tokens just stored: a reconnect revokes nothing unless told to."""
    first = await setup.accounts.connect("crm", "alice", tokens_for(setup.clock))
    new = tokens_for(setup.clock)
    await setup.accounts.connect("crm", "alice", new)
    assert setup.vendor.revoked == []
    assert await setup.token() == new.access_token.reveal()
    detail = (await setup.events())[-1]["detail"]
    assert detail["replaced"] == first.id
    assert not any(name.startswith("replaced_revoke") for name in detail)


async def test_reconnecting_replaces_and_revokes_the_previous_connection_when_asked() -> None:
    setup = Setup(revoke_replaced=True)
    old = tokens_for(setup.clock)
    first = await setup.accounts.connect("crm", "alice", old)
    new = tokens_for(setup.clock)
    second = await setup.accounts.connect("crm", "alice", new)
    assert second.id != first.id
    assert await setup.token() == new.access_token.reveal()
    assert ("refresh_token", old.refresh_token.reveal()) in setup.vendor.revoked  # type: ignore[union-attr]
    detail = (await setup.events())[-1]["detail"]
    assert detail["replaced"] == first.id and detail["replaced_revoke_refresh"] == "revoked"


async def test_a_reissued_refresh_token_is_not_revoked_on_reconnect() -> None:
    setup = Setup(revoke_replaced=True)
    old = tokens_for(setup.clock)
    await setup.accounts.connect("crm", "alice", old)
    again = VendorTokens(tokens_for(setup.clock).access_token, old.refresh_token, None)
    await setup.accounts.connect("crm", "alice", again)
    assert [hint for hint, _ in setup.vendor.revoked] == ["access_token"]


async def test_a_failed_revocation_never_fails_the_connect() -> None:
    setup = Setup(revoke_replaced=True)
    await setup.accounts.connect("crm", "alice", tokens_for(setup.clock))
    setup.vendor.revoke_failure = VendorRefused("crm", "invalid_request")
    new = tokens_for(setup.clock)
    await setup.accounts.connect("crm", "alice", new)
    assert await setup.token() == new.access_token.reveal()
    assert (await setup.events())[-1]["detail"]["replaced_revoke_refresh"] == "refused"


async def test_list_shows_connections_without_tokens(setup: Setup) -> None:
    await setup.accounts.connect("crm", "bob", tokens_for(setup.clock))
    await setup.accounts.connect("crm", "alice", tokens_for(setup.clock))
    listed = await setup.accounts.list()
    assert [(r.service, r.user_id) for r in listed] == [("crm", "alice"), ("crm", "bob")]
    assert [r.user_id for r in await setup.accounts.list(user_id="bob")] == ["bob"]


async def test_a_bad_identifier_is_a_usage_error(setup: Setup) -> None:
    with pytest.raises(UsageError):
        await setup.accounts.connect("crm", "not a user id", tokens_for(setup.clock))


async def test_no_token_reaches_a_repr_a_log_or_the_audit(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []
    with caplog.at_level(logging.DEBUG):
        tokens = tokens_for(setup.clock)
        seen += [tokens.access_token.reveal(), tokens.refresh_token.reveal()]  # type: ignore[union-attr]
        record = await setup.accounts.connect("crm", "alice", tokens)
        setup.clock.advance(3600)
        await setup.token()
        setup.clock.advance(3600)
        setup.vendor.failure = VendorUnavailable("crm", "crm: ConnectTimeout")
        with pytest.raises(BadGateway) as failed:
            await setup.token()
        setup.clock.advance(2)  # past the back-off after the failure
        setup.vendor.failure = VendorRefused("crm", "invalid_grant")
        with pytest.raises(ConnectionRequired) as broken:
            await setup.token()
        await setup.accounts.connect("crm", "alice", tokens_for(setup.clock))
        await setup.accounts.disconnect("crm", "alice", by="alice")
    seen += [t.access_token.reveal() for t in setup.vendor.issued]
    seen += [t.refresh_token.reveal() for t in setup.vendor.issued if t.refresh_token]
    events = str(await setup.events())
    texts = [
        caplog.text, events, repr(record), repr(setup.accounts), str(failed.value),
        repr(broken.value), str(broken.value.body()), repr(setup.store.rows),
    ]  # fmt: skip
    for value in seen:
        for text in texts:
            assert value not in text


async def test_concurrent_calls_in_one_instance_renew_once(setup: Setup) -> None:
    await setup.accounts.connect("crm", "alice", tokens_for(setup.clock))
    setup.clock.advance(3600)
    results: list[str] = []

    async def call() -> None:
        results.append(await setup.token())

    async with anyio.create_task_group() as group:
        for _ in range(50):
            group.start_soon(call)
    [issued] = setup.vendor.issued
    assert results == [issued.access_token.reveal()] * 50
    assert setup.store.updates == 1


async def test_each_user_gets_their_own_renewed_token_under_load(setup: Setup) -> None:
    users = ["alice", "bob", "carol"]
    for user in users:
        await setup.accounts.connect("crm", user, tokens_for(setup.clock))
    setup.clock.advance(3600)
    presented: dict[str, str] = {}
    original = setup.vendor.refresh

    async def refresh(refresh_token: Any) -> VendorTokens:
        issued = await original(refresh_token)
        for user in users:  # tag which user's refresh token came in
            row = setup.store.rows[("crm", user)]
            opened = setup.accounts.sealer.open(row, "refresh")
            if opened is not None and opened == refresh_token:
                presented[issued.access_token.reveal()] = user
        return issued

    setup.vendor.refresh = refresh  # type: ignore[method-assign]
    got: list[tuple[str, str]] = []

    async def call(user: str) -> None:
        await anyio.lowlevel.checkpoint()
        got.append((user, await setup.token(user)))

    async with anyio.create_task_group() as group:
        for index in range(90):
            group.start_soon(call, users[index % 3])
    assert len(setup.vendor.issued) == 3
    assert len(got) == 90
    for user, value in got:
        assert presented[value] == user
