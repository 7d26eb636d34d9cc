"""Regressions of the second attack review of connected accounts (findings 2 and 4).

2. A vendor that omits ``expires_in`` (RFC 6749 §5.1 only recommends it; Salesforce never sends
   it) left the connection stuck once its session ended: ``refresh_due`` never fired, every call
   got 502 ``upstream_rejected_credential``, the stored refresh token was never used and the
   connection was never marked broken. Now a 401 to the token the connection still holds marks
   it due: the next call renews it (or finds the grant dead: ``connection_broken``).
4. ``rotate-kek`` racing a refresh lost the vendor's rotated refresh token: the refresh's
   compare-and-set lost to the reseal, and the vendor's new tokens were dropped; the next
   renewal presented the retired refresh token and the vendor killed the grant. Now a write
   that loses to a writer that did not renew the row is made again on top of it.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from agentguard import Guard
from agentguard._model import ConnectedAccount, ConnectionStatus
from agentguard._secret import Secret
from agentguard.audit._writer import AuditWriter
from agentguard.config import load_settings
from agentguard.connect import ConnectedAccounts, ConnectionRequired, VendorRefused
from agentguard.connect._rejection import REJECTION_INTERVAL
from agentguard.credentials import KeyRing
from agentguard.errors import Reason
from agentguard.gateway import build_gateway
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock, make_user
from agentguard.testing._oauth_vendor import FakeOAuthVendor
from tests.connect.accounts_fakes import DictStore, StubVendor, principal, token, tokens_for
from tests.connect.gateway_support import CRM_SERVICE
from tests.support.servers import LoopbackServer, free_port

OLD = os.urandom(32)
NEW = os.urandom(32)
ALICE = "alice"
KEY = ("crm", ALICE)


def ring(*ids: str) -> KeyRing:
    keys = {"kek-1": OLD, "kek-2": NEW}
    return KeyRing({key_id: keys[key_id] for key_id in ids}, ids[0])


class RacingStore(DictStore):
    """Runs ``before_update`` (once) before a compare-and-set, as a racing writer would."""

    def __init__(self) -> None:
        super().__init__()
        self.before_update: Callable[[], Awaitable[None]] | None = None
        self.attempts = 0

    async def update_connection(self, record: ConnectedAccount, *, version: int) -> bool:
        self.attempts += 1
        hook, self.before_update = self.before_update, None
        if hook is not None:
            await hook()
        return await super().update_connection(record, version=version)


class Setup:
    def __init__(self, store: DictStore | None = None) -> None:
        self.clock = FakeClock()
        self.store = store if store is not None else DictStore()
        self.audit_store = MemoryStore(clock=self.clock)
        self.vendor = StubVendor(self.clock)
        self.alice = principal(ALICE, self.clock)

    def accounts(self, keyring: KeyRing | None = None) -> ConnectedAccounts:
        return ConnectedAccounts(
            self.store,
            keyring or ring("kek-1"),
            {"crm": self.vendor},
            clock=self.clock,
            audit=AuditWriter(self.audit_store),
            connect_uri=lambda service: f"https://gw.example/connect/{service}",
        )

    @property
    def row(self) -> ConnectedAccount:
        return self.store.rows[KEY]

    async def events(self, action: str) -> list[dict[str, Any]]:
        found = [entry.event() for entry in await self.audit_store.read()]
        return [event for event in found if event["action"] == action]


# Finding 2: a 401 to the token the connection holds renews it on the next call.


@pytest.mark.anyio
@pytest.mark.parametrize("lifetime", [None, 3600])
async def test_a_rejected_token_is_renewed_on_the_next_call(lifetime: int | None) -> None:
    setup = Setup()
    accounts = setup.accounts()
    connected = tokens_for(setup.clock, lifetime=lifetime)
    await accounts.connect("crm", ALICE, connected)
    setup.clock.advance(600)  # the vendor ended the session; the gateway does not know
    assert await accounts.token_for(setup.alice, "crm") == connected.access_token
    assert setup.vendor.presented == []
    before = setup.row
    assert await accounts.rejected(setup.alice, "crm", connected.access_token)
    marked = setup.row
    assert (marked.expires_at, marked.version) == (setup.clock.now(), before.version + 1)
    assert (marked.updated_at, marked.id, marked.scopes) == (before.updated_at, before.id,
                                                            before.scopes)  # fmt: skip
    renewed = await accounts.token_for(setup.alice, "crm")
    assert renewed == setup.vendor.issued[-1].access_token != connected.access_token
    assert setup.vendor.presented == [connected.refresh_token.reveal()]  # type: ignore[union-attr]
    assert await accounts.token_for(setup.alice, "crm") == renewed  # not renewed again
    assert len(setup.vendor.presented) == 1
    assert len(await setup.events("connection.refresh")) == 1


@pytest.mark.anyio
async def test_a_vendor_that_never_sends_expires_in_and_never_fails_is_never_renewed() -> None:
    setup = Setup()
    accounts = setup.accounts()
    connected = tokens_for(setup.clock, lifetime=None)
    await accounts.connect("crm", ALICE, connected)
    for _ in range(50):
        setup.clock.advance(3600)
        assert await accounts.token_for(setup.alice, "crm") == connected.access_token
    assert setup.vendor.presented == []
    assert setup.store.updates == 0


@pytest.mark.anyio
async def test_a_token_already_replaced_is_left_alone() -> None:
    setup = Setup()
    accounts = setup.accounts()
    first = tokens_for(setup.clock, lifetime=600)
    await accounts.connect("crm", ALICE, first)
    setup.clock.advance(590)
    renewed = await accounts.token_for(setup.alice, "crm")  # renewed ahead of expiry
    assert renewed != first.access_token
    row = setup.row
    # a call made with the first token comes back 401 after the renewal: nothing to do
    assert await accounts.rejected(setup.alice, "crm", first.access_token)
    assert setup.row == row
    assert await accounts.token_for(setup.alice, "crm") == renewed
    assert len(setup.vendor.presented) == 1


@pytest.mark.anyio
async def test_a_rejected_connection_without_refresh_token_is_broken_on_the_next_call() -> None:
    setup = Setup()
    accounts = setup.accounts()
    connected = tokens_for(setup.clock, lifetime=None, refresh=False)
    await accounts.connect("crm", ALICE, connected)
    assert await accounts.rejected(setup.alice, "crm", connected.access_token)
    with pytest.raises(ConnectionRequired) as refused:
        await accounts.token_for(setup.alice, "crm")
    assert refused.value.reason is Reason.CONNECTION_BROKEN
    assert refused.value.connect_uri == "https://gw.example/connect/crm"
    assert setup.row.status is ConnectionStatus.BROKEN
    assert setup.vendor.presented == []


@pytest.mark.anyio
async def test_a_rejected_token_whose_grant_is_dead_breaks_the_connection() -> None:
    setup = Setup()
    accounts = setup.accounts()
    connected = tokens_for(setup.clock, lifetime=None)
    await accounts.connect("crm", ALICE, connected)
    setup.vendor.failure = VendorRefused("crm", "invalid_grant")
    assert await accounts.rejected(setup.alice, "crm", connected.access_token)
    with pytest.raises(ConnectionRequired) as refused:
        await accounts.token_for(setup.alice, "crm")
    assert refused.value.reason is Reason.CONNECTION_BROKEN
    assert setup.row.status is ConnectionStatus.BROKEN
    assert len(await setup.events("connection.broken")) == 1


@pytest.mark.anyio
async def test_an_endpoint_that_keeps_answering_401_renews_at_most_once_a_minute() -> None:
    setup = Setup()
    accounts = setup.accounts()
    connected = tokens_for(setup.clock, lifetime=None)
    await accounts.connect("crm", ALICE, connected)
    sent = connected.access_token
    for _ in range(10):  # an endpoint that answers 401 whatever the token
        await accounts.rejected(setup.alice, "crm", sent)
        sent = await accounts.token_for(setup.alice, "crm")
        setup.clock.advance(1)
    assert len(setup.vendor.presented) == 1
    setup.clock.advance(REJECTION_INTERVAL)
    assert await accounts.rejected(setup.alice, "crm", sent)
    assert await accounts.token_for(setup.alice, "crm") != sent
    assert len(setup.vendor.presented) == 2


@pytest.mark.anyio
async def test_a_reconnect_lets_the_new_tokens_be_marked_at_once() -> None:
    setup = Setup()
    accounts = setup.accounts()
    first = tokens_for(setup.clock, lifetime=None)
    await accounts.connect("crm", ALICE, first)
    assert await accounts.rejected(setup.alice, "crm", first.access_token)
    second = tokens_for(setup.clock, lifetime=None)
    await accounts.connect("crm", ALICE, second)
    assert await accounts.rejected(setup.alice, "crm", second.access_token)
    assert setup.row.expires_at == setup.clock.now()


@pytest.mark.anyio
async def test_nothing_is_marked_without_a_working_connection_of_that_user() -> None:
    setup = Setup()
    accounts = setup.accounts()
    connected = tokens_for(setup.clock, lifetime=None)
    assert not await accounts.rejected(setup.alice, "crm", connected.access_token)  # none
    await accounts.connect("crm", ALICE, connected)
    row = setup.row
    bob = principal("bob", setup.clock)
    assert not await accounts.rejected(bob, "crm", connected.access_token)  # not bob's
    assert setup.row == row
    setup.store.rows[KEY] = row.model_copy(update={"status": ConnectionStatus.BROKEN})
    assert not await accounts.rejected(setup.alice, "crm", connected.access_token)


@pytest.mark.anyio
async def test_a_store_outage_while_marking_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Down(DictStore):
        async def get_connection(self, service: str, user_id: str) -> ConnectedAccount | None:
            raise ConnectionError("the store is down")

    setup = Setup(Down())
    accounts = setup.accounts()
    assert not await accounts.rejected(setup.alice, "crm", Secret(token("at")))
    assert "connection store" in caplog.text


@pytest.mark.anyio
async def test_a_mark_racing_a_reseal_is_made_on_top_of_it() -> None:
    store = RacingStore()
    setup = Setup(store)
    gateway = setup.accounts(ring("kek-2", "kek-1"))
    connected = tokens_for(setup.clock, lifetime=None)
    await setup.accounts(ring("kek-1")).connect("crm", ALICE, connected)

    async def reseal() -> None:
        assert (await setup.accounts(ring("kek-2", "kek-1")).reseal()).rewritten == 1

    store.before_update = reseal
    assert await gateway.rejected(setup.alice, "crm", connected.access_token)
    assert (store.attempts, setup.row.key_id, setup.row.version) == (3, "kek-2", 3)
    assert setup.row.expires_at == setup.clock.now()


# Finding 4: a renewal's write that loses to a reseal (or a mark) is made on top of it.


@pytest.mark.anyio
async def test_a_reseal_during_the_renewal_keeps_the_rotated_refresh_token() -> None:
    setup = Setup()
    connected = tokens_for(setup.clock, lifetime=600)
    await setup.accounts(ring("kek-1")).connect("crm", ALICE, connected)
    gateway = setup.accounts(ring("kek-2", "kek-1"))  # restarted with both keys, new first

    async def rotate_kek() -> None:  # `agentguard credentials rotate-kek`, another process
        setup.vendor.before_answer = None
        report = await setup.accounts(ring("kek-2", "kek-1")).reseal()
        assert report.rewritten == 1

    setup.vendor.before_answer = rotate_kek
    setup.clock.advance(560)  # inside the refresh window
    renewed = await gateway.token_for(setup.alice, "crm")
    issued = setup.vendor.issued[-1]
    assert renewed == issued.access_token
    row = setup.row
    assert (row.key_id, row.version) == ("kek-2", 3)
    assert gateway.sealer.open(row, "refresh") == issued.refresh_token  # not the retired one
    assert row.expires_at == issued.expires_at
    refreshed = await setup.events("connection.refresh")
    assert [event["detail"]["version"] for event in refreshed] == [3]
    setup.clock.advance(3600)  # due again: the vendor's current refresh token is presented
    assert await gateway.token_for(setup.alice, "crm") == setup.vendor.issued[-1].access_token
    assert setup.vendor.presented[-1] == issued.refresh_token.reveal()  # type: ignore[union-attr]
    assert setup.accounts(ring("kek-2")).sealer.open(setup.row, "access") is not None


@pytest.mark.anyio
async def test_a_mark_during_the_renewal_keeps_the_renewal() -> None:
    setup = Setup()
    accounts = setup.accounts()
    connected = tokens_for(setup.clock, lifetime=600)
    await accounts.connect("crm", ALICE, connected)

    async def a_401_meanwhile() -> None:
        setup.vendor.before_answer = None
        assert await accounts.rejected(setup.alice, "crm", connected.access_token)

    setup.vendor.before_answer = a_401_meanwhile
    setup.clock.advance(560)
    renewed = await accounts.token_for(setup.alice, "crm")
    assert renewed == setup.vendor.issued[-1].access_token
    assert setup.row.expires_at == setup.vendor.issued[-1].expires_at  # no longer due
    assert await accounts.token_for(setup.alice, "crm") == renewed
    assert len(setup.vendor.presented) == 1


@pytest.mark.anyio
async def test_another_renewal_during_ours_still_wins() -> None:
    setup = Setup()
    accounts = setup.accounts()
    await accounts.connect("crm", ALICE, tokens_for(setup.clock, lifetime=600))
    theirs = tokens_for(setup.clock, lifetime=3600)

    async def renewed_elsewhere() -> None:
        setup.vendor.before_answer = None
        row = setup.row
        moved = row.model_copy(update={"version": row.version + 1})
        setup.store.rows[KEY] = accounts.sealer.seal(
            moved.model_copy(update={"expires_at": theirs.expires_at}),
            theirs.access_token,
            theirs.refresh_token,
        )

    setup.vendor.before_answer = renewed_elsewhere
    setup.clock.advance(560)
    assert await accounts.token_for(setup.alice, "crm") == theirs.access_token
    assert accounts.sealer.open(setup.row, "refresh") == theirs.refresh_token
    assert await setup.events("connection.refresh") == []


@pytest.mark.anyio
async def test_invalid_grant_racing_a_reseal_still_breaks_the_connection() -> None:
    setup = Setup()
    await setup.accounts(ring("kek-1")).connect("crm", ALICE, tokens_for(setup.clock, lifetime=600))
    gateway = setup.accounts(ring("kek-2", "kek-1"))

    async def rotate_kek() -> None:
        setup.vendor.before_answer = None
        await setup.accounts(ring("kek-2", "kek-1")).reseal()

    setup.vendor.before_answer = rotate_kek
    setup.vendor.failure = VendorRefused("crm", "invalid_grant")
    setup.clock.advance(601)
    with pytest.raises(ConnectionRequired) as refused:
        await gateway.token_for(setup.alice, "crm")
    assert refused.value.reason is Reason.CONNECTION_BROKEN
    assert (setup.row.status, setup.row.key_id) == (ConnectionStatus.BROKEN, "kek-2")


@pytest.mark.anyio
async def test_a_renewal_whose_row_never_stops_changing_gives_up() -> None:
    class Churning(DictStore):
        attempts = 0

        async def update_connection(self, record: ConnectedAccount, *, version: int) -> bool:
            self.attempts += 1
            current = self.rows[(record.service, record.user_id)]
            self.rows[KEY] = current.model_copy(update={"version": current.version + 1})
            return False

    store = Churning()
    setup = Setup(store)
    accounts = setup.accounts()
    connected = tokens_for(setup.clock, lifetime=600)
    await accounts.connect("crm", ALICE, connected)
    setup.clock.advance(560)
    assert await accounts.token_for(setup.alice, "crm") == connected.access_token  # still valid
    assert store.attempts == 5


# Finding 2 through the gateway: a vendor without expires_in, its session ended.

SETTINGS = (
    """\
public_origin = "{origin}"

[store]
url = "memory://"
"""
    + CRM_SERVICE
)

Scope = dict[str, Any]
Message = MutableMapping[str, Any]


@dataclass
class NoExpiresIn:
    """The fake vendor, with ``expires_in`` taken out of every token answer."""

    vendor: FakeOAuthVendor
    answers: list[dict[str, Any]] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].endswith("/token"):
            await self.vendor(scope, receive, send)
            return
        start: Message = {}
        body = bytearray()

        async def hold(message: Message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            else:
                body.extend(message.get("body", b""))

        await self.vendor(scope, receive, hold)
        answer = json.loads(bytes(body))
        if isinstance(answer, dict) and "access_token" in answer:
            answer.pop("expires_in", None)
            self.answers.append(answer)
        content = json.dumps(answer).encode()
        headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(content)).encode()))
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": content})


@dataclass
class World:
    clock: FakeClock
    vendor: FakeOAuthVendor
    tap: NoExpiresIn
    origin: str
    agent_key: str

    def call(self) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.agent_key}"}
        return httpx.get(f"{self.origin}/crm/contacts", headers=headers, timeout=10)

    def connect(self, ticket: str) -> None:
        with httpx.Client(timeout=10) as browser:
            started = browser.post(
                f"{self.origin}/connect/crm",
                data={"ticket": ticket, "action": "connect"},
                headers={"Origin": self.origin},
            )
            assert started.status_code == 303, started.text
            consented = browser.get(started.headers["location"])
            assert consented.status_code == 302, consented.text
            back = browser.get(consented.headers["location"])
            assert back.status_code == 200, back.text
        assert [sorted(answer) for answer in self.tap.answers] == [
            ["access_token", "refresh_token", "scope", "token_type"]
        ]


async def _seed(store: MemoryStore) -> str:
    await make_user(store, user_id=ALICE, grants="crm:write")
    issued = await Guard(store).issuer.issue(ALICE, "ws-1")
    return issued.access_key.reveal()


@pytest.fixture
def world(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> Iterator[World]:
    caplog.set_level(logging.WARNING, logger="httpx")  # URLs carry the ticket and the state
    clock = FakeClock(datetime.now(timezone.utc))
    vendor = FakeOAuthVendor(users=("alice-at-vendor",), token_ttl=600, clock=clock)
    vendor.auto_approve = "alice-at-vendor"
    tap = NoExpiresIn(vendor)
    with LoopbackServer(tap) as vendor_server:
        vendor.bind(vendor_server.url)
        port = free_port()
        origin = f"http://127.0.0.1:{port}"
        path = tmp_path / "agentguard.toml"
        path.write_text(
            SETTINGS.format(
                origin=origin, api=vendor.api_url, vendor=vendor.issuer, client_id=vendor.client_id
            )
        )
        environ = {
            "AGENTGUARD_KEK": "kek-1:" + base64.urlsafe_b64encode(os.urandom(32)).decode(),
            "AGENTGUARD_OAUTH_CRM_CLIENT_SECRET": vendor.client_secret.reveal(),
        }
        settings = load_settings(path, environ=environ)
        store = MemoryStore()
        key = anyio.run(_seed, store)
        gateway = build_gateway(settings, store=store, clock=clock)
        assert gateway.connect is not None
        flows = gateway.connect.flows
        ticket, _ = anyio.run(lambda: flows.issue_ticket("crm", ALICE, by="ops-anna"))
        with LoopbackServer(gateway.app, lifespan="on", port=port):
            world = World(clock, vendor, tap, origin, key)
            world.connect(ticket.reveal())
            yield world


def test_a_vendor_without_expires_in_is_renewed_after_it_rejects_the_token(world: World) -> None:
    """The attacker's PoC (test_attack2_2), on a FakeClock."""
    assert world.call().status_code == 200
    world.clock.advance(599)
    assert world.call().status_code == 200  # the gateway does not know when: it does not renew
    assert world.vendor.refresh_calls == 0
    world.clock.advance(2)  # the vendor's session timed out; it never said when it would
    rejected = world.call()  # not retried: the agent's request body may not be replayable
    assert rejected.status_code == 502
    assert rejected.json()["reason"] == "upstream_rejected_credential"
    assert "renewed before the next call" in rejected.json()["error_description"]
    assert world.vendor.refresh_calls == 0
    answers = [world.call() for _ in range(3)]
    assert [answer.status_code for answer in answers] == [200, 200, 200]
    assert world.vendor.refresh_calls == 1
    assert answers[0].json()["vendor_user"] == "alice-at-vendor"


def test_a_dead_grant_is_connection_broken_once_the_vendor_rejected_its_token(
    world: World,
) -> None:
    world.vendor.invalidate_grants("alice-at-vendor")  # the user removed the app at the vendor
    rejected = world.call()
    assert (rejected.status_code, rejected.json()["reason"]) == (
        502, "upstream_rejected_credential",
    )  # fmt: skip
    refused = world.call()
    assert refused.status_code == 403
    body = refused.json()
    assert (body["error"], body["reason"]) == ("connection_required", "connection_broken")
    assert body["connect_uri"] == f"{world.origin}/connect/crm"
    assert world.vendor.refresh_calls == 1
