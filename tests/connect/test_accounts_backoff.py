"""The back-off of a failed renewal (attack review, finding 4), the vendor's ``Retry-After``,
and every secret of a connection named for the echo scan (finding 8), on in-test fakes."""

from __future__ import annotations

import secrets
from datetime import timedelta

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentguard._secret import Secret
from agentguard.connect import (
    ConnectedAccounts,
    ConnectionRequired,
    VendorRefused,
    VendorUnavailable,
)
from agentguard.connect._backoff import RETRY_AFTER_LAST, RefreshBackoff, VendorBackoff
from agentguard.connect._vendor import parse_retry_after
from agentguard.credentials import KeyRing
from agentguard.errors import BadGateway, Reason
from agentguard.testing import FakeClock
from tests.connect.accounts_fakes import DictStore, StubVendor, principal, tokens_for
from tests.connect.vendor_support import CLIENT_SECRET, REFRESH, Vendor, token_answer

pytestmark = pytest.mark.anyio

KEY = ("crm", "alice")


class LaterUnavailable(VendorUnavailable):
    """What the vendor client raises for an answer with ``Retry-After``."""

    def __init__(self, seconds: float) -> None:
        super().__init__("crm", "crm: the vendor's token endpoint answered 429")
        self.retry_after = seconds  # errors are sealed once the whole constructor returned


class Setup:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.store = DictStore()
        self.keyring = KeyRing.generate()
        self.vendor = StubVendor(self.clock)
        self.accounts = ConnectedAccounts(
            self.store, self.keyring, {"crm": self.vendor}, clock=self.clock
        )

    async def token(self, user: str = "alice") -> Secret:
        return await self.accounts.token_for(principal(user, self.clock), "crm")


@pytest.fixture
def setup() -> Setup:
    return Setup()


# -- the back-off book -------------------------------------------------------------------------


def test_the_back_off_doubles_up_to_a_minute_and_ends_when_forgotten() -> None:
    clock = FakeClock()
    backoff = RefreshBackoff(clock)
    assert backoff.waiting(KEY) is None
    waits = [backoff.failed(KEY) for _ in range(9)]
    assert waits == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert backoff.waiting(KEY) == 60
    assert backoff.waiting(("crm", "bob")) is None  # per (service, user)
    assert backoff.waiting(("billing", "alice")) is None
    clock.advance(59)
    assert backoff.waiting(KEY) == 1
    clock.advance(1)
    assert backoff.waiting(KEY) is None
    backoff.forget(KEY)
    assert backoff.failed(KEY) == 1 and len(backoff) == 1


def test_a_failure_long_after_the_last_starts_again_at_one_second() -> None:
    clock = FakeClock()
    backoff = RefreshBackoff(clock)
    for _ in range(5):
        backoff.failed(KEY)
    clock.advance(16 + 61)
    assert backoff.failed(KEY) == 1


def test_retry_after_is_a_floor_capped_at_five_minutes() -> None:
    clock = FakeClock()
    backoff = RefreshBackoff(clock)
    assert backoff.failed(KEY, retry_after=30) == 30
    assert backoff.failed(("crm", "bob"), retry_after=0.2) == 1  # never below the back-off
    assert backoff.failed(("crm", "carol"), retry_after=86400) == RETRY_AFTER_LAST
    assert backoff.failed(("crm", "dave"), retry_after=float("inf")) == 1


def test_the_book_forgets_the_oldest_beyond_its_capacity() -> None:
    clock = FakeClock()
    backoff = RefreshBackoff(clock, capacity=3)
    for user in ("u1", "u2", "u3"):
        backoff.failed(("crm", user))
    clock.advance(1)  # u1..u3 ended
    backoff.failed(("crm", "u4"), retry_after=10)
    assert len(backoff) == 1 and backoff.waiting(("crm", "u4")) == 10
    for user in ("u5", "u6", "u7"):
        backoff.failed(("crm", user), retry_after=10)
    assert len(backoff) == 3 and backoff.waiting(("crm", "u4")) is None


def test_the_refusal_while_backing_off_is_a_502_with_retry_after() -> None:
    refused = VendorBackoff("crm", 1.2)
    assert isinstance(refused, BadGateway) and refused.status == 502
    assert refused.reason is Reason.VENDOR_UNAVAILABLE
    assert refused.response_headers() == [("retry-after", "2")]
    assert refused.body()["service"] == "crm"


# -- Retry-After -------------------------------------------------------------------------------


def test_retry_after_is_read_as_seconds_or_a_date() -> None:
    clock = FakeClock()
    now = clock.now()
    assert parse_retry_after(None, now) is None
    assert parse_retry_after("120", now) == 120
    assert parse_retry_after(" 7 ", now) == 7
    later = (now + timedelta(seconds=90)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert parse_retry_after(later, now) == 90
    earlier = (now - timedelta(seconds=90)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert parse_retry_after(earlier, now) == 0
    for bad in ("", "-1", "1.5", "soon", "9" * 12, "Mon, 99 Foo 2026"):
        assert parse_retry_after(bad, now) is None


@given(st.text(max_size=64))
def test_any_retry_after_is_none_or_a_wait(value: str) -> None:
    seconds = parse_retry_after(value, FakeClock().now())
    assert seconds is None or seconds >= 0


@pytest.mark.parametrize("status", [429, 503])
async def test_the_vendor_client_passes_retry_after_on(status: int) -> None:
    vendor = Vendor(lambda request: httpx.Response(status, headers={"Retry-After": "42"}))
    with pytest.raises(VendorUnavailable) as down:
        await vendor.client().refresh(Secret(REFRESH))
    assert getattr(down.value, "retry_after", None) == 42
    vendor.answer = lambda request: httpx.Response(status)
    with pytest.raises(VendorUnavailable) as plain:
        await vendor.client().refresh(Secret(REFRESH))
    assert getattr(plain.value, "retry_after", None) is None


# -- the accounts ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "failure",
    [
        VendorUnavailable("crm", "crm: the vendor's token endpoint answered 503"),
        VendorRefused("crm", "invalid_client"),
        VendorRefused("crm", "invalid_response"),
    ],
    ids=["unavailable", "invalid_client", "invalid_response"],
)
async def test_a_failed_renewal_is_not_tried_again_until_the_back_off_passed(
    setup: Setup, failure: Exception
) -> None:
    tokens = tokens_for(setup.clock)
    await setup.accounts.connect("crm", "alice", tokens)
    setup.clock.advance(3600 - 30)
    setup.vendor.failure = failure
    for _ in range(10):
        assert await setup.token() == tokens.access_token
    assert len(setup.vendor.presented) == 1
    setup.clock.advance(1)
    assert await setup.token() == tokens.access_token
    assert len(setup.vendor.presented) == 2
    setup.vendor.failure = None
    setup.clock.advance(2)
    renewed = await setup.token()
    assert renewed != tokens.access_token and len(setup.vendor.presented) == 3


async def test_an_expired_token_is_refused_with_the_remaining_back_off(setup: Setup) -> None:
    await setup.accounts.connect("crm", "alice", tokens_for(setup.clock))
    setup.clock.advance(3600)
    setup.vendor.failure = LaterUnavailable(20)
    with pytest.raises(VendorBackoff) as first:
        await setup.token()
    assert first.value.response_headers() == [("retry-after", "20")]
    setup.clock.advance(15)
    with pytest.raises(VendorBackoff) as second:
        await setup.token()
    assert second.value.response_headers() == [("retry-after", "5")]
    assert second.value.reason is Reason.VENDOR_UNAVAILABLE
    assert len(setup.vendor.presented) == 1


async def test_one_users_back_off_does_not_hold_back_anothers_renewal(setup: Setup) -> None:
    await setup.accounts.connect("crm", "alice", tokens_for(setup.clock))
    await setup.accounts.connect("crm", "bob", tokens_for(setup.clock))
    setup.clock.advance(3600 - 30)
    setup.vendor.failure = VendorUnavailable("crm", "crm: down")
    await setup.token("alice")
    setup.vendor.failure = None
    bob = await setup.token("bob")
    assert bob == setup.vendor.issued[-1].access_token
    assert len(setup.vendor.presented) == 2


async def test_a_reconnect_or_a_broken_grant_ends_the_back_off(setup: Setup) -> None:
    await setup.accounts.connect("crm", "alice", tokens_for(setup.clock))
    setup.clock.advance(3600)
    setup.vendor.failure = VendorUnavailable("crm", "crm: down")
    with pytest.raises(BadGateway):
        await setup.token()
    reconnected = tokens_for(setup.clock)
    await setup.accounts.connect("crm", "alice", reconnected)
    setup.clock.advance(3600)  # the new tokens are due at once: no back-off left from before
    setup.vendor.failure = VendorRefused("crm", "invalid_grant")
    with pytest.raises(ConnectionRequired):
        await setup.token()
    assert len(setup.vendor.presented) == 2
    assert len(setup.accounts._flight.backoff) == 0


# -- every secret of the connection ------------------------------------------------------------


async def test_outgoing_names_the_refresh_token_and_the_client_secret() -> None:
    clock = FakeClock()
    handed_out: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        handed_out.append("vrt_" + secrets.token_hex(16))
        return token_answer(refresh_token=handed_out[-1])

    client = Vendor(answer).client(clock=clock)
    accounts = ConnectedAccounts(DictStore(), KeyRing.generate(), {"crm": client}, clock=clock)
    tokens = tokens_for(clock, lifetime=600)
    await accounts.connect("crm", "alice", tokens)
    token, involved = await accounts.outgoing(principal("alice", clock), "crm")
    assert token == tokens.access_token
    assert involved == (tokens.access_token, tokens.refresh_token, Secret(CLIENT_SECRET))
    clock.advance(600 - 30)  # renewed on this call: the rotated refresh token is named too
    token, involved = await accounts.outgoing(principal("alice", clock), "crm")
    [rotated] = handed_out
    assert token != tokens.access_token
    assert involved == (token, tokens.refresh_token, Secret(rotated), Secret(CLIENT_SECRET))
    assert await accounts.token_for(principal("alice", clock), "crm") == token


async def test_a_public_client_has_no_secret_to_name() -> None:
    clock = FakeClock()
    accounts = ConnectedAccounts(
        DictStore(), KeyRing.generate(), {"crm": StubVendor(clock)}, clock=clock
    )
    tokens = tokens_for(clock, refresh=False)
    await accounts.connect("crm", "alice", tokens)
    assert await accounts.outgoing(principal("alice", clock), "crm") == (
        tokens.access_token,
        (tokens.access_token,),
    )
