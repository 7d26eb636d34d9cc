"""Security review of issue 21, VendorClient: the discovery allow-list pins ports (finding 9),
discovered metadata is fetched again after its TTL, and what an authorization response's
``iss`` must be (RFC 9207)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentguard.connect import VendorRefused, VendorUnavailable
from agentguard.connect._discovery import (
    DEFAULT_PORTS,
    Endpoints,
    allowed_hosts,
    endpoints_from_metadata,
    issuer_fault,
)
from agentguard.connect._vendor import DISCOVERY_TTL, VendorClient
from agentguard.errors import UsageError
from agentguard.testing import FakeClock
from tests.connect.vendor_support import (
    AUTH,
    Vendor,
    config,
    discovering,
    discovery_config,
    metadata,
    served_vendor,
)

pytestmark = pytest.mark.anyio

WELL_KNOWN = "/.well-known/oauth-authorization-server"


# -- the allow-list pins ports --------------------------------------------------------------


@pytest.mark.parametrize(
    "token_endpoint",
    [
        "https://auth.crm.example:6379/token",
        "https://auth.crm.example:8443/token",
        "https://auth.crm.example:80/token",
    ],
)
async def test_the_issuers_host_on_another_port_is_refused(token_endpoint: str) -> None:
    vendor = discovering(metadata(token_endpoint=token_endpoint))
    client = vendor.client(discovery_config())
    with pytest.raises(VendorUnavailable, match=r"token_endpoint is on 'auth\.crm\.example:"):
        await client.endpoints()
    assert [request.url.path for request in vendor.requests] == [WELL_KNOWN]


async def test_the_issuers_default_port_written_out_is_the_same_port() -> None:
    client = discovering(metadata(token_endpoint=AUTH + ":443/token")).client(discovery_config())
    assert (await client.endpoints()).token == AUTH + ":443/token"


async def test_an_issuer_on_its_own_port_pins_that_port() -> None:
    issuer = "https://auth.crm.example:8443"
    good = metadata(
        issuer,
        authorization_endpoint=issuer + "/authorize",
        token_endpoint=issuer + "/token",
        revocation_endpoint=issuer + "/revoke",
    )
    oauth = discovery_config(issuer=issuer)
    assert (await discovering(good).client(oauth).endpoints()).token == issuer + "/token"
    on_443 = {**good, "token_endpoint": AUTH + "/token"}
    with pytest.raises(VendorUnavailable, match=r"token_endpoint is on 'auth\.crm\.example'"):
        await discovering(on_443).client(oauth).endpoints()


async def test_an_entry_without_a_port_allows_the_default_port_only() -> None:
    document = metadata(token_endpoint="https://login.crm-cdn.example:8443/oauth/token")
    oauth = discovery_config(discovery_hosts=("auth.crm.example", "login.crm-cdn.example"))
    with pytest.raises(VendorUnavailable, match=r"'login\.crm-cdn\.example:8443'"):
        await discovering(document).client(oauth).endpoints()
    on_443 = metadata(token_endpoint="https://login.crm-cdn.example/oauth/token")
    assert (await discovering(on_443).client(oauth).endpoints()).token.startswith(
        "https://login.crm-cdn.example/"
    )


async def test_an_ipv6_entry_is_written_in_brackets_with_its_port() -> None:
    document = metadata(token_endpoint="https://[2001:db8::1]:8443/token")
    oauth = discovery_config(discovery_hosts=("auth.crm.example", "[2001:DB8::1]:8443"))
    assert (await discovering(document).client(oauth).endpoints()).token == (
        "https://[2001:db8::1]:8443/token"
    )
    other_port = metadata(token_endpoint="https://[2001:db8::1]:8444/token")
    with pytest.raises(VendorUnavailable, match="not in discovery_hosts"):
        await discovering(other_port).client(oauth).endpoints()


@pytest.mark.parametrize(
    "entry",
    ["auth.crm.example:0", "auth.crm.example:65536", "auth.crm.example:http", "2001:db8::1",
     "user@auth.crm.example", "auth.crm.example/path", "", "auth crm", "[zz::1]:443"],
)  # fmt: skip
def test_a_malformed_allow_list_entry_is_refused_at_construction(entry: str) -> None:
    # refused by the client, or already by the settings (both are ValueErrors)
    with pytest.raises(ValueError, match="discovery_hosts"):
        Vendor().client(discovery_config(discovery_hosts=("auth.crm.example", entry)))


def test_an_issuer_with_an_impossible_port_is_refused_at_construction() -> None:
    with pytest.raises(UsageError, match="crm"):
        Vendor().client(discovery_config(issuer="https://auth.crm.example:99999"))


def test_configured_endpoints_need_no_allow_list() -> None:
    Vendor().client(config(discovery_hosts=("auth.crm.example:99999",)))


@given(
    allowed=st.integers(1, 65535),
    port=st.integers(1, 65535),
    scheme=st.sampled_from(["https", "http"]),
    written=st.booleans(),
)
def test_an_endpoint_is_allowed_exactly_on_the_allowed_port(
    allowed: int, port: int, scheme: str, written: bool
) -> None:
    oauth = discovery_config(
        discovery_hosts=("auth.crm.example", f"api.crm.example:{allowed}"),
        allow_insecure_http=True,
    )
    netloc = f"api.crm.example:{port}"
    if port == DEFAULT_PORTS[scheme] and not written:
        netloc = "api.crm.example"
    document = metadata(token_endpoint=f"{scheme}://{netloc}/token")
    if port == allowed:
        assert endpoints_from_metadata("crm", oauth, document).token == document["token_endpoint"]
    else:
        with pytest.raises(VendorUnavailable, match="token_endpoint is on"):
            endpoints_from_metadata("crm", oauth, document)


def test_the_default_allow_list_is_the_issuers_host_and_port() -> None:
    assert allowed_hosts(discovery_config()) == {("auth.crm.example", 443)}
    insecure = discovery_config(issuer="http://127.0.0.1:8123/t", allow_insecure_http=True)
    assert allowed_hosts(insecure) == {("127.0.0.1", 8123)}


# -- discovered metadata lives an hour ------------------------------------------------------


def counting(documents: list[dict[str, Any] | int]) -> Vendor:
    """A vendor answering each metadata fetch with the next of ``documents`` (a status alone
    is a failure); the last one is repeated."""

    def answer(request: httpx.Request) -> httpx.Response:
        item = documents.pop(0) if len(documents) > 1 else documents[0]
        if isinstance(item, int):
            return httpx.Response(item)
        return httpx.Response(200, json=item)

    return Vendor(answer)


async def test_discovered_metadata_is_fetched_again_after_its_ttl() -> None:
    clock = FakeClock()
    moved = metadata(token_endpoint=AUTH + "/v2/token")
    vendor = counting([metadata(), moved])
    client = vendor.client(discovery_config(), clock=clock)
    assert (await client.endpoints()).token == AUTH + "/token"
    clock.advance(DISCOVERY_TTL - 1)
    assert (await client.endpoints()).token == AUTH + "/token"
    assert len(vendor.requests) == 1
    clock.advance(1)
    assert (await client.endpoints()).token == AUTH + "/v2/token"
    assert len(vendor.requests) == 2


async def test_a_failed_refetch_is_an_error_and_the_next_call_tries_again() -> None:
    clock = FakeClock()
    vendor = counting([metadata(), 503, metadata(token_endpoint=AUTH + "/v2/token")])
    client = vendor.client(discovery_config(), clock=clock, discovery_ttl=60)
    await client.endpoints()
    clock.advance(60)
    with pytest.raises(VendorUnavailable, match="answered 503"):
        await client.endpoints()
    assert (await client.endpoints()).token == AUTH + "/v2/token"
    assert len(vendor.requests) == 3


async def test_refetched_metadata_that_turned_hostile_is_refused() -> None:
    clock = FakeClock()
    vendor = counting([metadata(), metadata(token_endpoint="https://auth.crm.example:6379/")])
    client = vendor.client(discovery_config(), clock=clock)
    await client.endpoints()
    clock.advance(DISCOVERY_TTL)
    with pytest.raises(VendorUnavailable, match="token_endpoint"):
        await client.endpoints()


async def test_a_clock_set_back_refetches() -> None:
    clock = FakeClock()
    vendor = counting([metadata()])
    client = vendor.client(discovery_config(), clock=clock)
    await client.endpoints()
    clock.set(clock.now() - timedelta(seconds=5))
    await client.endpoints()
    assert len(vendor.requests) == 2


@pytest.mark.parametrize("ttl", [0, -1.0])
def test_the_discovery_ttl_is_positive(ttl: float) -> None:
    with pytest.raises(UsageError, match="discovery_ttl"):
        Vendor().client(discovery_config(), discovery_ttl=ttl)


def test_the_timeout_is_public() -> None:
    assert Vendor().client(timeout=3.5).timeout == 3.5


# -- RFC 9207: the issuer an authorization response must name ------------------------------


async def test_configured_endpoints_expect_the_configured_issuer_and_fetch_nothing() -> None:
    vendor = Vendor()
    assert await vendor.client().expected_issuer() == (None, False)
    assert await vendor.client(config(issuer=AUTH)).expected_issuer() == (AUTH, False)
    assert vendor.requests == []


@pytest.mark.parametrize(("promised", "required"), [(True, True), (False, False), (None, False)])
async def test_discovery_says_whether_iss_is_required(
    promised: bool | None, required: bool
) -> None:
    document = metadata(authorization_response_iss_parameter_supported=promised)
    client = discovering(document).client(discovery_config())
    assert await client.expected_issuer() == (AUTH, required)


@pytest.mark.parametrize("promised", ["true", 1, [True]])
async def test_a_non_boolean_iss_promise_refuses_the_metadata(promised: object) -> None:
    document = metadata(authorization_response_iss_parameter_supported=promised)
    with pytest.raises(VendorUnavailable, match="authorization_response_iss_parameter_supported"):
        await discovering(document).client(discovery_config()).expected_issuer()


async def test_expected_issuer_fails_like_discovery() -> None:
    with pytest.raises(VendorUnavailable, match="answered 503"):
        await discovering(status=503).client(discovery_config()).expected_issuer()


@pytest.mark.parametrize(
    ("iss", "issuer", "required", "fault"),
    [
        (AUTH, AUTH, True, None),
        (AUTH, AUTH, False, None),
        (None, AUTH, False, None),
        (None, AUTH, True, "has no iss"),
        ("https://evil.example", AUTH, False, "another issuer"),
        (AUTH + "/", AUTH, True, "another issuer"),
        ("HTTPS://auth.crm.example", AUTH, True, "another issuer"),
        ("", AUTH, False, "another issuer"),
        ("https://evil.example", None, False, None),
        (None, None, False, None),
    ],
)
def test_issuer_fault(
    iss: str | None, issuer: str | None, required: bool, fault: str | None
) -> None:
    found = issuer_fault(iss, issuer, required=required)
    assert (found is None) == (fault is None)
    if fault is not None:
        assert found is not None and fault in found


async def test_check_issuer_refuses_a_mismatch_and_a_missing_promised_iss() -> None:
    document = metadata(authorization_response_iss_parameter_supported=True)
    client = discovering(document).client(discovery_config())
    await client.check_issuer(AUTH)
    for iss in ("https://evil.example", None):
        with pytest.raises(VendorRefused) as caught:
            await client.check_issuer(iss)
        assert caught.value.error == "invalid_response" and not caught.value.permanent
        assert "RFC 9207" in str(caught.value) and "evil" not in str(caught.value)


async def test_the_fake_vendor_promises_iss_and_discovery_sees_it() -> None:
    with served_vendor() as fake:
        client = VendorClient(
            "crm", fake.oauth_config(discovery=True), client_secret=fake.client_secret
        )
        try:
            assert await client.expected_issuer() == (fake.issuer, True)
        finally:
            await client.aclose()


def test_endpoints_default_to_no_issuer_promise() -> None:
    endpoints = Endpoints("https://a.example/authorize", "https://a.example/token")
    assert (endpoints.issuer, endpoints.iss_parameter_supported) == (None, False)
