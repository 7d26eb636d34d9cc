"""VendorClient: the authorization URL, client authentication, every failure shape of the
vendor's answers (hand-built with httpx.MockTransport), RFC 8414 discovery under its allow-list,
and the whole flow over real sockets against FakeOAuthVendor."""

from __future__ import annotations

import base64
import gzip
import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import quote_plus

import anyio
import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agentguard._secret import Secret
from agentguard.connect import VendorRefused, VendorUnavailable
from agentguard.connect._discovery import well_known_url
from agentguard.connect._vendor import MAX_RESPONSE_BYTES, VendorClient
from agentguard.errors import UsageError
from agentguard.testing import FakeClock
from tests.connect.vendor_support import (
    ACCESS,
    AUTH,
    CLIENT_SECRET,
    REDIRECT_URI,
    REFRESH,
    Vendor,
    approve,
    config,
    discovering,
    discovery_config,
    metadata,
    pkce,
    query_of,
    served_vendor,
    token_answer,
)
from tests.support.servers import free_port

pytestmark = pytest.mark.anyio

CHALLENGE = pkce()[1]
VERIFIER = pkce()[0]

Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]

# -- the authorization URL ----------------------------------------------------------------


async def test_the_authorization_url_carries_the_code_flow_with_pkce() -> None:
    client = Vendor().client(config(authorize_params={"access_type": "offline"}))
    url = httpx.URL(
        await client.authorization_url(
            redirect_uri=REDIRECT_URI, state="st-1", code_challenge=CHALLENGE
        )
    )
    assert (url.scheme, url.host, url.path) == ("https", "auth.crm.example", "/authorize")
    assert dict(url.params) == {
        "response_type": "code",
        "client_id": "agentguard-crm",
        "redirect_uri": REDIRECT_URI,
        "state": "st-1",
        "code_challenge": CHALLENGE,
        "code_challenge_method": "S256",
        "scope": "contacts.read contacts.write",
        "access_type": "offline",
    }
    assert "scope=contacts.read%20contacts.write" in str(url)


async def test_the_endpoint_query_is_kept_but_never_overrides_the_flow() -> None:
    endpoint = AUTH + "/authorize?tenant=acme&response_type=token&state=evil"
    client = Vendor().client(config(authorization_endpoint=endpoint, scopes=()))
    url = httpx.URL(
        await client.authorization_url(
            redirect_uri=REDIRECT_URI, state="st-2", code_challenge=CHALLENGE
        )
    )
    pairs = list(url.params.multi_items())
    assert ("tenant", "acme") in pairs
    assert [value for name, value in pairs if name == "response_type"] == ["code"]
    assert [value for name, value in pairs if name == "state"] == ["st-2"]
    assert "scope" not in url.params


@pytest.mark.parametrize(
    ("state", "challenge", "redirect_uri"),
    [
        ("", CHALLENGE, REDIRECT_URI),
        ("line\nbreak", CHALLENGE, REDIRECT_URI),
        ("st", "short", REDIRECT_URI),
        ("st", CHALLENGE + "=", REDIRECT_URI),
        ("st", CHALLENGE, "/relative/callback"),
        ("st", CHALLENGE, "https://gateway.test/cb#fragment"),
        ("st", CHALLENGE, "javascript:alert(1)"),
    ],
)
async def test_a_malformed_authorization_request_is_a_usage_error(
    state: str, challenge: str, redirect_uri: str
) -> None:
    vendor = Vendor()
    with pytest.raises(UsageError):
        await vendor.client().authorization_url(
            redirect_uri=redirect_uri, state=state, code_challenge=challenge
        )
    assert vendor.requests == []


# -- client authentication ----------------------------------------------------------------


async def test_client_secret_basic_form_encodes_each_half_before_base64() -> None:
    vendor = Vendor()
    secret = "p@ss:w/rd+ ü-" + secrets.token_hex(4)
    client = vendor.client(config(client_id="crm app:1"), client_secret=Secret(secret))
    await client.exchange_code("code-1", redirect_uri=REDIRECT_URI, code_verifier=VERIFIER)
    header = vendor.requests[0].headers["authorization"]
    assert header.startswith("Basic ")
    pair = base64.b64decode(header.removeprefix("Basic ")).decode()
    assert pair == f"{quote_plus('crm app:1')}:{quote_plus(secret)}"
    assert pair.count(":") == 1  # the ":" inside the id and the secret is encoded
    assert vendor.form() == {
        "grant_type": "authorization_code",
        "code": "code-1",
        "redirect_uri": REDIRECT_URI,
        "code_verifier": VERIFIER,
    }


async def test_client_secret_post_sends_the_secret_in_the_form() -> None:
    vendor = Vendor()
    client = vendor.client(config(client_auth="client_secret_post"))
    await client.refresh(Secret(REFRESH))
    assert "authorization" not in vendor.requests[0].headers
    assert vendor.form() == {
        "grant_type": "refresh_token",
        "refresh_token": REFRESH,
        "client_id": "agentguard-crm",
        "client_secret": CLIENT_SECRET,
    }


async def test_a_public_client_sends_its_id_alone() -> None:
    vendor = Vendor()
    client = vendor.client(config(client_auth="none"), client_secret=None)
    await client.refresh(Secret(REFRESH))
    assert "authorization" not in vendor.requests[0].headers
    assert vendor.form()["client_id"] == "agentguard-crm"
    assert "client_secret" not in vendor.form()


def test_a_confidential_client_needs_its_secret() -> None:
    with pytest.raises(UsageError, match="client secret"):
        VendorClient("crm", config(), client_secret=None)


def test_the_repr_shows_no_secret() -> None:
    client = Vendor().client()
    assert CLIENT_SECRET not in repr(client)
    assert CLIENT_SECRET not in repr(vars(client))


# -- token responses and failure shapes ---------------------------------------------------


async def test_tokens_are_parsed_with_the_injected_clock() -> None:
    clock = FakeClock()
    client = Vendor(lambda r: token_answer(scope="contacts.read")).client(clock=clock)
    tokens = await client.refresh(Secret(REFRESH))
    assert tokens.access_token.reveal() == ACCESS
    assert tokens.refresh_token == Secret(REFRESH)
    assert (tokens.expires_at - clock.now()).total_seconds() == 600  # type: ignore[operator]
    assert tokens.scopes == ("contacts.read",)


async def test_an_invalid_grant_is_permanent() -> None:
    client = Vendor(lambda r: httpx.Response(400, json={"error": "invalid_grant"})).client()
    with pytest.raises(VendorRefused) as caught:
        await client.refresh(Secret(REFRESH))
    assert caught.value.error == "invalid_grant" and caught.value.permanent


async def test_a_vendor_echoing_the_refresh_token_as_its_error_is_not_believed() -> None:
    client = Vendor(lambda r: httpx.Response(400, json={"error": REFRESH})).client()
    with pytest.raises(VendorRefused) as caught:
        await client.refresh(Secret(REFRESH))
    assert caught.value.error == "invalid_response"
    assert REFRESH not in str(caught.value)


async def test_a_redirect_from_the_token_endpoint_is_not_followed() -> None:
    vendor = Vendor(
        lambda r: httpx.Response(307, headers={"location": "https://evil.example/steal"})
    )
    with pytest.raises(VendorRefused) as caught:
        await vendor.client().refresh(Secret(REFRESH))
    assert caught.value.error == "invalid_response"
    assert [request.url.host for request in vendor.requests] == ["auth.crm.example"]


def _raise(error: type[httpx.HTTPError]) -> Callable[[httpx.Request], httpx.Response]:
    def answer(request: httpx.Request) -> httpx.Response:
        raise error("failed", request=request)  # type: ignore[call-arg]

    return answer


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        (lambda r: httpx.Response(500, text="Traceback: " + REFRESH), "answered 500"),
        (lambda r: httpx.Response(503, json={"error": "temporarily_unavailable"}), "503"),
        (lambda r: httpx.Response(429, headers={"retry-after": "5"}), "429"),
        (_raise(httpx.ConnectError), "could not be reached (ConnectError)"),
        (_raise(httpx.RemoteProtocolError), "could not be reached"),
        (_raise(httpx.ReadTimeout), "timed out"),
        (_raise(httpx.ConnectTimeout), "timed out"),
    ],
)
async def test_outages_are_unavailable_and_show_nothing_secret(
    answer: Callable[[httpx.Request], httpx.Response], said: str
) -> None:
    with pytest.raises(VendorUnavailable) as caught:
        await Vendor(answer).client().refresh(Secret(REFRESH))
    message = str(caught.value)
    assert said in message and message.startswith("crm: ")
    assert REFRESH not in message and CLIENT_SECRET not in message


class _Drip(httpx.AsyncByteStream):
    """A body that sends a byte, then never finishes."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b"{"
        await anyio.sleep(60)


class _Chunks(httpx.AsyncByteStream):
    def __init__(self, total: int) -> None:
        self.total = total

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self.total // 4096):
            yield b" " * 4096


async def test_a_body_that_never_ends_meets_the_overall_deadline() -> None:
    client = Vendor(lambda r: httpx.Response(200, stream=_Drip())).client(timeout=0.2)
    started = time.monotonic()
    with pytest.raises(VendorUnavailable, match="timed out"):
        await client.refresh(Secret(REFRESH))
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    "answer",
    [
        lambda r: httpx.Response(200, stream=_Chunks(MAX_RESPONSE_BYTES + 8192)),
        lambda r: httpx.Response(400, stream=_Chunks(10 * MAX_RESPONSE_BYTES)),
        lambda r: httpx.Response(
            200,
            headers={"content-encoding": "gzip"},
            content=gzip.compress(b" " * (50 * MAX_RESPONSE_BYTES)),  # small on the wire
        ),
    ],
)
async def test_an_oversized_answer_is_not_read_whole(
    answer: Callable[[httpx.Request], httpx.Response],
) -> None:
    with pytest.raises(VendorUnavailable, match=f"more than {MAX_RESPONSE_BYTES} bytes"):
        await Vendor(answer).client().refresh(Secret(REFRESH))


async def test_an_answer_of_exactly_the_cap_is_read() -> None:
    head = json.dumps({"access_token": ACCESS, "token_type": "Bearer", "pad": ""})[:-2]
    body = (head + " " * (MAX_RESPONSE_BYTES - len(head) - 2) + '"}').encode()
    assert len(body) == MAX_RESPONSE_BYTES
    client = Vendor(lambda r: httpx.Response(200, content=body)).client()
    assert (await client.refresh(Secret(REFRESH))).access_token.reveal() == ACCESS


async def test_a_malformed_code_is_not_sent() -> None:
    vendor = Vendor()
    with pytest.raises(VendorRefused) as caught:
        await vendor.client().exchange_code(
            "bad\ncode", redirect_uri=REDIRECT_URI, code_verifier=VERIFIER
        )
    assert caught.value.error == "invalid_request"
    assert vendor.requests == []


async def test_a_malformed_verifier_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        await (
            Vendor()
            .client()
            .exchange_code("code", redirect_uri=REDIRECT_URI, code_verifier="too-short")
        )


_answers = st.builds(
    lambda status, ctype, body: httpx.Response(
        status, headers={"content-type": ctype}, content=body
    ),
    st.sampled_from([200, 200, 201, 204, 301, 400, 401, 403, 404, 429, 500, 502, 503]),
    st.sampled_from(["application/json", "text/html", "application/json; charset=latin-1"]),
    st.one_of(
        st.binary(max_size=200),
        st.sampled_from(
            [
                json.dumps({"error": REFRESH}).encode(),
                json.dumps({"access_token": ACCESS, "token_type": "DPoP"}).encode(),
                json.dumps(
                    {"access_token": ACCESS, "token_type": "Bearer", "expires_in": -1}
                ).encode(),
                json.dumps({"access_token": ACCESS + " x", "token_type": "Bearer"}).encode(),
                json.dumps({"error": "invalid_grant", "error_description": REFRESH}).encode(),
                b'{"access_token": "' + ACCESS.encode() + b'", "access_token": "b"}',
            ]
        ),
        st.dictionaries(
            st.sampled_from(["access_token", "token_type", "expires_in", "scope", "error"]),
            st.none() | st.integers() | st.text(max_size=12) | st.just(ACCESS),
        ).map(lambda d: json.dumps(d).encode()),
    ),
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(answer=_answers)
@example(answer=httpx.Response(400, json={"error": REFRESH}))
def test_any_answer_gives_tokens_or_a_refusal_that_leaks_nothing(
    answer: httpx.Response, anyio_backend: str
) -> None:
    async def run() -> BaseException | None:
        client = Vendor(lambda r: answer).client()
        try:
            tokens = await client.refresh(Secret(REFRESH))
        except (VendorRefused, VendorUnavailable) as error:
            return error
        finally:
            await client.aclose()
        assert tokens.access_token.reveal()
        return None

    error = anyio.run(run, backend=anyio_backend)
    if error is not None:
        text = f"{error} {error!r} {error.args}"
        watched = [REFRESH, CLIENT_SECRET]  # what the request sent: never shown
        vendors_code = isinstance(error, VendorRefused) and error.error not in (
            "invalid_response",
            "unsupported_token_type",
        )
        if not vendors_code:  # a token in the body is never shown either
            watched.append(ACCESS)
        for secret in watched:
            assert secret not in text and secret[:12] not in text


# -- revocation ---------------------------------------------------------------------------


async def test_revoke_posts_the_token_with_its_hint_and_client_auth() -> None:
    vendor = Vendor(lambda r: httpx.Response(200))
    assert await vendor.client().revoke(Secret(REFRESH)) is True
    request = vendor.requests[0]
    assert request.url == AUTH + "/revoke"
    assert request.headers["authorization"].startswith("Basic ")
    assert vendor.form() == {"token": REFRESH, "token_type_hint": "refresh_token"}


async def test_revoke_without_an_endpoint_asks_nobody() -> None:
    vendor = Vendor()
    assert await vendor.client(config(revocation_endpoint=None)).revoke(Secret(REFRESH)) is False
    assert vendor.requests == []


@pytest.mark.parametrize(
    ("status", "body", "raised", "code"),
    [
        (503, b"", VendorUnavailable, None),
        (500, b"oops", VendorUnavailable, None),
        (400, b'{"error": "unsupported_token_type"}', VendorRefused, "unsupported_token_type"),
        (401, b'{"error": "invalid_client"}', VendorRefused, "invalid_client"),
        (404, b"not found", VendorRefused, "invalid_response"),
        (302, b"", VendorRefused, "invalid_response"),
    ],
)
async def test_revoke_failures(
    status: int, body: bytes, raised: type[Exception], code: str | None
) -> None:
    client = Vendor(lambda r: httpx.Response(status, content=body)).client()
    with pytest.raises(raised) as caught:
        await client.revoke(Secret(REFRESH), token_type_hint="access_token")
    if code is not None:
        assert isinstance(caught.value, VendorRefused) and caught.value.error == code


# -- discovery ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("issuer", "url"),
    [
        ("https://auth.example", "https://auth.example/.well-known/oauth-authorization-server"),
        ("https://auth.example/", "https://auth.example/.well-known/oauth-authorization-server"),
        (
            "https://auth.example/tenant/1",
            "https://auth.example/.well-known/oauth-authorization-server/tenant/1",
        ),
        (
            "https://auth.example:8443/t/",
            "https://auth.example:8443/.well-known/oauth-authorization-server/t",
        ),
    ],
)
def test_the_metadata_url_inserts_the_well_known_segment(issuer: str, url: str) -> None:
    assert well_known_url(issuer) == url


async def test_discovered_endpoints_are_used() -> None:
    vendor = discovering()
    client = vendor.client(discovery_config())
    url = await client.authorization_url(
        redirect_uri=REDIRECT_URI, state="s", code_challenge=CHALLENGE
    )
    assert url.startswith(AUTH + "/authorize?")
    await client.refresh(Secret(REFRESH))
    assert await client.revoke(Secret(REFRESH)) is True
    paths = [request.url.path for request in vendor.requests]
    assert paths == ["/.well-known/oauth-authorization-server", "/token", "/revoke"]


async def test_concurrent_first_calls_fetch_the_metadata_once() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await anyio.sleep(0.05)
        return httpx.Response(200, json=metadata())

    vendor = Vendor(slow)
    client = vendor.client(discovery_config())
    async with anyio.create_task_group() as tasks:
        for _ in range(20):
            tasks.start_soon(client.endpoints)
    assert len(vendor.requests) == 1
    assert (await client.endpoints()).token == AUTH + "/token"
    assert len(vendor.requests) == 1


async def test_a_failed_discovery_is_not_cached() -> None:
    statuses = [503, 200]
    vendor = Vendor(lambda r: httpx.Response(statuses.pop(0), json=metadata()))
    client = vendor.client(discovery_config())
    with pytest.raises(VendorUnavailable, match="answered 503"):
        await client.endpoints()
    assert (await client.endpoints()).authorization == AUTH + "/authorize"
    await client.endpoints()
    assert len(vendor.requests) == 2


@pytest.mark.parametrize(
    ("changes", "field", "shown"),
    [
        (
            {"token_endpoint": "https://169.254.169.254/latest/meta-data"},
            "token_endpoint",
            "'169.254.169.254'",
        ),
        (
            {"authorization_endpoint": "https://evil.example/authorize"},
            "authorization_endpoint",
            "'evil.example'",
        ),
        (
            {"revocation_endpoint": "https://localhost:6379/"},
            "revocation_endpoint",
            "'localhost:6379'",
        ),
        (
            {"token_endpoint": "https://auth.crm.example.evil.example/token"},
            "token_endpoint",
            "'auth.crm.example.evil.example'",
        ),
        (
            {"token_endpoint": "https://auth.crm.example@evil.example/token"},
            "token_endpoint",
            "plain absolute URL",
        ),
        (
            {"token_endpoint": "https://auth.crm.example\\@evil.example/token"},
            "token_endpoint",
            "plain absolute URL",
        ),
        (
            {"token_endpoint": "https://evil.example\\.auth.crm.example/token"},
            "token_endpoint",
            "plain absolute URL",
        ),
        (
            {"token_endpoint": "https://auth.crm.example /token"},
            "token_endpoint",
            "plain absolute URL",
        ),
        ({"token_endpoint": "http://auth.crm.example/token"}, "token_endpoint", "https"),
        ({"token_endpoint": "file:///etc/passwd"}, "token_endpoint", "https"),
        ({"token_endpoint": "/token"}, "token_endpoint", "https"),
        ({"token_endpoint": "https://auth.crm.example/token#frag"}, "token_endpoint", "fragment"),
        (
            {"token_endpoint": ["https://auth.crm.example/token"]},
            "token_endpoint",
            "plain absolute URL",
        ),
        ({"token_endpoint": None}, "token_endpoint", "plain absolute URL"),
        ({"authorization_endpoint": None}, "authorization_endpoint", "plain absolute URL"),
        ({"issuer": AUTH + "/"}, "issuer", "configured issuer"),
        ({"issuer": "https://evil.example"}, "issuer", "configured issuer"),
        ({"issuer": None}, "issuer", "configured issuer"),
        (
            {"code_challenge_methods_supported": ["plain"]},
            "code_challenge_methods_supported",
            "S256",
        ),
        ({"code_challenge_methods_supported": "S256"}, "code_challenge_methods_supported", "S256"),
    ],
)
async def test_hostile_metadata_is_refused_and_never_followed(
    changes: dict[str, Any], field: str, shown: str
) -> None:
    document = metadata()
    document.update(changes)
    document = {k: v for k, v in document.items() if v is not None}
    vendor = discovering(document)
    client = vendor.client(discovery_config())
    for call in (client.endpoints(), client.refresh(Secret(REFRESH))):
        with pytest.raises(VendorUnavailable) as caught:
            await call
        assert field in str(caught.value) and shown in str(caught.value)
    assert {request.url.path for request in vendor.requests} == {
        "/.well-known/oauth-authorization-server"
    }
    assert {request.url.host for request in vendor.requests} == {"auth.crm.example"}


async def test_metadata_without_pkce_methods_or_revocation_is_taken() -> None:
    vendor = discovering(metadata(code_challenge_methods_supported=None, revocation_endpoint=None))
    client = vendor.client(discovery_config())
    assert await client.revoke(Secret(REFRESH)) is False


async def test_discovery_hosts_allow_the_vendors_other_hosts_only() -> None:
    document = metadata(token_endpoint="https://login.crm-cdn.example:8443/oauth/token")
    client = discovering(document).client(
        discovery_config(discovery_hosts=("auth.crm.example", "LOGIN.crm-cdn.example:8443"))
    )
    assert (await client.endpoints()).token == "https://login.crm-cdn.example:8443/oauth/token"
    only_cdn = discovering(document).client(
        discovery_config(discovery_hosts=("login.crm-cdn.example:8443",))
    )
    with pytest.raises(VendorUnavailable, match=r"authorization_endpoint.*'auth\.crm\.example'"):
        await only_cdn.endpoints()


@pytest.mark.parametrize(
    "answer",
    [
        lambda r: httpx.Response(302, headers={"location": "https://evil.example/meta"}),
        lambda r: httpx.Response(200, text="<html>"),
        lambda r: httpx.Response(200, json=["not", "an", "object"]),
        lambda r: httpx.Response(404),
        _raise(httpx.ConnectError),
    ],
)
async def test_unusable_metadata_is_unavailable(
    answer: Callable[[httpx.Request], httpx.Response],
) -> None:
    vendor = Vendor(answer)
    with pytest.raises(VendorUnavailable):
        await vendor.client(discovery_config()).endpoints()
    assert len(vendor.requests) == 1


# -- over real sockets, against FakeOAuthVendor --------------------------------------------


async def test_the_whole_flow_against_the_fake_vendor() -> None:
    with served_vendor() as fake:
        client = VendorClient("crm", fake.oauth_config(), client_secret=fake.client_secret)
        verifier, challenge = pkce()
        url = await client.authorization_url(
            redirect_uri=REDIRECT_URI, state="st-flow", code_challenge=challenge
        )
        back = await approve(url, login="bob")
        assert back["state"] == "st-flow"
        tokens = await client.exchange_code(
            back["code"], redirect_uri=REDIRECT_URI, code_verifier=verifier
        )
        assert tokens.scopes == ("contacts.read", "contacts.write")
        async with httpx.AsyncClient() as http:
            answer = await http.get(
                fake.api_url + "/contacts",
                headers={"authorization": f"Bearer {tokens.access_token.reveal()}"},
            )
        assert answer.json()["vendor_user"] == "bob"
        assert tokens.refresh_token is not None
        renewed = await client.refresh(tokens.refresh_token)
        assert renewed.refresh_token is not None and renewed.refresh_token != tokens.refresh_token
        with pytest.raises(VendorRefused) as reused:
            await client.refresh(tokens.refresh_token)
        assert reused.value.permanent
        assert not fake.is_active(renewed.refresh_token)  # the reuse killed the family
        assert await client.revoke(renewed.access_token, token_type_hint="access_token")
        assert (fake.token_calls, fake.refresh_calls, fake.api_calls["bob"]) == (3, 2, 1)
        await client.aclose()


@pytest.mark.parametrize("client_auth", ["client_secret_basic", "client_secret_post"])
async def test_discovery_and_both_secret_methods_against_the_fake_vendor(
    client_auth: str,
) -> None:
    with served_vendor(path="/tenant/eu", auto_approve="alice") as fake:
        oauth = fake.oauth_config(discovery=True, client_auth=client_auth)
        assert oauth.issuer is not None and oauth.issuer.endswith("/tenant/eu")
        client = VendorClient("crm", oauth, client_secret=fake.client_secret)
        verifier, challenge = pkce()
        url = await client.authorization_url(
            redirect_uri=REDIRECT_URI, state="s", code_challenge=challenge
        )
        async with httpx.AsyncClient() as browser:
            location = (await browser.get(url)).headers["location"]
        tokens = await client.exchange_code(
            query_of(location)["code"], redirect_uri=REDIRECT_URI, code_verifier=verifier
        )
        assert fake.is_active(tokens.access_token)
        assert tokens.refresh_token is not None
        assert await client.revoke(tokens.refresh_token)
        assert not fake.is_active(tokens.access_token) and fake.revoked == 1
        await client.aclose()


async def test_a_public_client_against_the_fake_vendor() -> None:
    with served_vendor(public_client=True, auto_approve="alice") as fake:
        client = VendorClient("crm", fake.oauth_config())
        verifier, challenge = pkce()
        url = await client.authorization_url(
            redirect_uri=REDIRECT_URI, state="s", code_challenge=challenge
        )
        async with httpx.AsyncClient() as browser:
            code = query_of((await browser.get(url)).headers["location"])["code"]
        tokens = await client.exchange_code(code, redirect_uri=REDIRECT_URI, code_verifier=verifier)
        assert fake.is_active(tokens.access_token)
        await client.aclose()


async def test_a_wrong_verifier_or_secret_is_refused_by_the_fake_vendor() -> None:
    with served_vendor(auto_approve="alice") as fake:
        good = VendorClient("crm", fake.oauth_config(), client_secret=fake.client_secret)
        verifier, challenge = pkce()
        for wrong in ("verifier", "secret"):
            url = await good.authorization_url(
                redirect_uri=REDIRECT_URI, state="s", code_challenge=challenge
            )
            async with httpx.AsyncClient() as browser:
                code = query_of((await browser.get(url)).headers["location"])["code"]
            secret = Secret("cs-wrong-" + secrets.token_hex(8)) if wrong == "secret" else None
            client = VendorClient(
                "crm", fake.oauth_config(), client_secret=secret or fake.client_secret
            )
            with pytest.raises(VendorRefused) as caught:
                await client.exchange_code(
                    code,
                    redirect_uri=REDIRECT_URI,
                    code_verifier=pkce()[0] if wrong == "verifier" else verifier,
                )
            expected = "invalid_grant" if wrong == "verifier" else "invalid_client"
            assert caught.value.error == expected
            await client.aclose()
        await good.aclose()


async def test_vendor_failures_over_sockets() -> None:
    with served_vendor() as fake:
        client = VendorClient(
            "crm", fake.oauth_config(), client_secret=fake.client_secret, timeout=0.3
        )
        fake.fail_next("token", 503)
        with pytest.raises(VendorUnavailable, match="503"):
            await client.refresh(Secret(REFRESH))
        fake.fail_next("revoke", 503, "temporarily_unavailable")
        with pytest.raises(VendorUnavailable):
            await client.revoke(Secret(REFRESH))
        fake.slow_down("token", 1.5)
        started = time.monotonic()
        with pytest.raises(VendorUnavailable, match="timed out"):
            await client.refresh(Secret(REFRESH))
        assert time.monotonic() - started < 1.4
        fake.slow_down("token", 0)
        with pytest.raises(VendorRefused) as caught:
            await client.refresh(Secret(REFRESH))  # a token the vendor never issued
        assert caught.value.permanent
        await client.aclose()


async def test_an_unreachable_vendor_is_unavailable() -> None:
    port = free_port()
    oauth = config(
        authorization_endpoint=f"http://127.0.0.1:{port}/authorize",
        token_endpoint=f"http://127.0.0.1:{port}/token",
        revocation_endpoint=None,
        allow_insecure_http=True,
    )
    client = VendorClient("crm", oauth, client_secret=Secret(CLIENT_SECRET), timeout=2)
    with pytest.raises(VendorUnavailable, match="could not be reached"):
        await client.refresh(Secret(REFRESH))
    await client.aclose()
