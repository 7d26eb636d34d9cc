"""FakeOAuthVendor is a strict OAuth server: what users' own test suites rely on it refusing."""

from __future__ import annotations

import secrets
import threading
from collections import Counter
from collections.abc import AsyncIterator

import anyio
import httpx
import pytest

from agentguard._secret import Secret
from agentguard.testing import FakeClock, FakeOAuthVendor
from tests.connect.vendor_support import (
    REDIRECT_URI,
    ConsentForm,
    Session,
    pkce,
    query_of,
    served_vendor,
)

pytestmark = pytest.mark.anyio

BASE = "http://vendor.test"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def session(clock: FakeClock) -> AsyncIterator[Session]:
    vendor = FakeOAuthVendor(clock=clock, base_url=BASE)
    transport = httpx.ASGITransport(app=vendor)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as http:
        yield Session(vendor, http)


# -- configuration and metadata -----------------------------------------------------------


def test_it_is_exported_lazily_and_shows_no_secret() -> None:
    vendor = FakeOAuthVendor(client_secret="cs-shown-nowhere-12345")
    assert "cs-shown-nowhere-12345" not in repr(vendor)
    assert vendor.client_secret == Secret("cs-shown-nowhere-12345")
    with pytest.raises(RuntimeError, match="bind"):
        vendor.oauth_config()


def test_its_client_configuration_points_at_it() -> None:
    vendor = FakeOAuthVendor(base_url=BASE + "/")
    oauth = vendor.oauth_config(scopes=("contacts.read",))
    assert oauth.token_endpoint == BASE + "/token"
    assert oauth.revocation_endpoint == BASE + "/revoke"
    assert oauth.allow_insecure_http and oauth.client_auth == "client_secret_basic"
    assert oauth.scopes == ("contacts.read",)
    discovery = vendor.oauth_config(discovery=True)
    assert (discovery.issuer, discovery.token_endpoint) == (BASE, None)
    assert FakeOAuthVendor(public_client=True, base_url=BASE).oauth_config().client_auth == "none"


async def test_the_metadata_describes_a_pkce_only_code_server(session: Session) -> None:
    document = (await session.http.get("/.well-known/oauth-authorization-server")).json()
    assert document["issuer"] == BASE
    assert document["token_endpoint"] == BASE + "/token"
    assert document["code_challenge_methods_supported"] == ["S256"]
    assert document["response_types_supported"] == ["code"]
    session.vendor.metadata_overrides.update(
        token_endpoint="https://169.254.169.254/", revocation_endpoint=None
    )
    document = (await session.http.get("/.well-known/oauth-authorization-server")).json()
    assert document["token_endpoint"] == "https://169.254.169.254/"
    assert "revocation_endpoint" not in document


async def test_an_issuer_with_a_path_serves_its_metadata_by_rfc_8414() -> None:
    with served_vendor(path="/tenant/eu") as vendor:
        async with httpx.AsyncClient() as http:
            origin = vendor.issuer.removesuffix("/tenant/eu")
            meta = await http.get(origin + "/.well-known/oauth-authorization-server/tenant/eu")
            assert meta.json()["token_endpoint"] == vendor.issuer + "/token"
            assert (await http.get(origin + "/token")).status_code == 404
            assert (
                await http.get(origin + "/.well-known/oauth-authorization-server")
            ).status_code == 404


# -- the authorization endpoint -----------------------------------------------------------


async def test_the_consent_page_offers_the_users_and_escapes_what_it_echoes(
    session: Session,
) -> None:
    state = '"><script>alert(1)</script>'
    page = await session.http.get("/authorize", params=session.authorize_params(state=state))
    assert page.status_code == 200
    assert "<script>" not in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    form = ConsentForm(page.text)
    assert form.scripts == 0
    assert form.options == ["alice", "bob"]
    assert form.buttons == {"allow": ("decision", "allow"), "deny": ("decision", "deny")}
    assert form.hidden["state"] == state  # escaped in HTML, intact once parsed
    assert session.vendor.authorizations[-1]["state"] == state


async def test_allow_redirects_with_a_code_and_the_state(session: Session) -> None:
    params = session.authorize_params()
    form = ConsentForm((await session.http.get("/authorize", params=params)).text)
    answer = await session.http.post(
        form.action, data={**form.hidden, "login": "bob", "decision": "allow"}
    )
    back = query_of(answer.headers["location"])
    assert answer.headers["location"].startswith(REDIRECT_URI + "?")
    assert back["state"] == params["state"] and back["iss"] == BASE and back["code"]


async def test_deny_redirects_with_access_denied(session: Session) -> None:
    params = session.authorize_params()
    form = ConsentForm((await session.http.get("/authorize", params=params)).text)
    answer = await session.http.post(
        form.action, data={**form.hidden, "login": "alice", "decision": "deny"}
    )
    assert query_of(answer.headers["location"]) == {
        "error": "access_denied",
        "state": params["state"],
        "iss": BASE,
    }


async def test_an_unknown_login_or_decision_is_refused(session: Session) -> None:
    form = ConsentForm(
        (await session.http.get("/authorize", params=session.authorize_params())).text
    )
    for login, decision in (("mallory", "allow"), ("alice", "maybe")):
        answer = await session.http.post(
            form.action, data={**form.hidden, "login": login, "decision": decision}
        )
        assert answer.status_code == 400


async def test_auto_approve_redirects_at_once(session: Session) -> None:
    session.vendor.auto_approve = "bob"
    answer = await session.http.get("/authorize", params=session.authorize_params())
    assert answer.status_code == 302
    code = query_of(answer.headers["location"])["code"]
    tokens = (await session.exchange(code)).json()
    assert (await session.api(tokens["access_token"])).json()["vendor_user"] == "bob"


@pytest.mark.parametrize(
    "changes",
    [
        {"client_id": "someone-else"},
        {"client_id": None},
        {"redirect_uri": None},
        {"redirect_uri": "/relative"},
        {"redirect_uri": "javascript:alert(1)"},
        {"redirect_uri": REDIRECT_URI + "#frag"},
    ],
)
async def test_an_unknown_client_or_bad_redirect_uri_gets_a_page_never_a_redirect(
    session: Session, changes: dict[str, str | None]
) -> None:
    answer = await session.http.get("/authorize", params=session.authorize_params(**changes))
    assert answer.status_code == 400
    assert "location" not in answer.headers


async def test_only_registered_redirect_uris_when_some_are_registered() -> None:
    vendor = FakeOAuthVendor(redirect_uris=[REDIRECT_URI], base_url=BASE)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=vendor), base_url=BASE) as http:
        session = Session(vendor, http)
        other = REDIRECT_URI + "/../evil"
        answer = await http.get("/authorize", params=session.authorize_params(redirect_uri=other))
        assert answer.status_code == 400 and "location" not in answer.headers
        assert await session.code()


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge_method": None}, "invalid_request"),
        ({"code_challenge": None}, "invalid_request"),
        ({"code_challenge": "short"}, "invalid_request"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"response_type": None}, "unsupported_response_type"),
        ({"scope": "contacts.read admin"}, "invalid_scope"),
    ],
)
async def test_a_bad_authorization_request_redirects_with_its_error(
    session: Session, changes: dict[str, str | None], error: str
) -> None:
    params = session.authorize_params(**changes)
    answer = await session.http.get("/authorize", params=params)
    assert answer.status_code == 302
    back = query_of(answer.headers["location"])
    assert back == {"error": error, "state": params["state"], "iss": BASE}


async def test_a_repeated_parameter_is_refused(session: Session) -> None:
    params: list[tuple[str, str | int | float | bool | None]] = [
        *session.authorize_params().items(),
        ("state", "second"),
    ]
    answer = await session.http.get("/authorize", params=params)
    assert answer.status_code == 400 and "location" not in answer.headers


# -- the token endpoint -------------------------------------------------------------------


async def test_a_code_gives_bearer_tokens_once(session: Session) -> None:
    code = await session.code()
    first = await session.exchange(code)
    assert first.status_code == 200
    assert first.headers["cache-control"] == "no-store"
    tokens = first.json()
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] == 3600
    assert tokens["scope"] == "contacts.read"
    assert (await session.api(tokens["access_token"])).status_code == 200
    replay = await session.exchange(code)
    assert (replay.status_code, replay.json()) == (400, {"error": "invalid_grant"})
    # RFC 6749 §4.1.2: what the code issued is revoked when it is replayed
    assert (await session.api(tokens["access_token"])).status_code == 401
    assert (await session.refresh(tokens["refresh_token"])).json()["error"] == "invalid_grant"


@pytest.mark.parametrize(
    "changes",
    [
        {"code_verifier": pkce()[0]},  # another verifier
        {"code_verifier": "short"},
        {"redirect_uri": REDIRECT_URI + "/other"},
    ],
)
async def test_a_code_is_bound_to_its_verifier_and_redirect_uri_and_burnt_by_a_miss(
    session: Session, changes: dict[str, str]
) -> None:
    code = await session.code()
    assert (await session.exchange(code, **changes)).json() == {"error": "invalid_grant"}
    assert (await session.exchange(code)).json() == {"error": "invalid_grant"}


async def test_a_code_without_a_verifier_is_refused(session: Session) -> None:
    code = await session.code()
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI}
    assert (await session.token(form)).json() == {"error": "invalid_grant"}


async def test_a_code_lives_sixty_seconds(session: Session, clock: FakeClock) -> None:
    code = await session.code()
    clock.advance(60)
    assert (await session.exchange(code)).json() == {"error": "invalid_grant"}
    code = await session.code()
    clock.advance(59)
    assert (await session.exchange(code)).status_code == 200


@pytest.mark.parametrize(
    ("headers", "extra", "status", "error"),
    [
        ({}, {}, 401, "invalid_client"),
        ("wrong", {}, 401, "invalid_client"),
        ({"authorization": "Basic !!notbase64"}, {}, 401, "invalid_client"),
        ({"authorization": "Bearer abc"}, {}, 401, "invalid_client"),
        (None, {"client_secret": "x"}, 400, "invalid_request"),  # two methods at once
        (None, {"client_id": "someone-else"}, 401, "invalid_client"),
    ],
)
async def test_the_client_must_authenticate_one_way(
    session: Session,
    headers: dict[str, str] | str | None,
    extra: dict[str, str],
    status: int,
    error: str,
) -> None:
    code = await session.code()
    sent = session.basic("cs-wrong-" + secrets.token_hex(6)) if headers == "wrong" else headers
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": session.verifier,
        **extra,
    }
    answer = await session.token(form, sent if isinstance(sent, dict) else None)
    assert (answer.status_code, answer.json()) == (status, {"error": error})
    if status == 401 and "authorization" in (sent or {}):
        assert answer.headers["www-authenticate"].startswith("Basic")


async def test_client_secret_post_is_accepted(session: Session) -> None:
    code = await session.code()
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": session.verifier,
        "client_id": session.vendor.client_id,
        "client_secret": session.vendor.client_secret.reveal(),
    }
    assert (await session.token(form, headers={})).status_code == 200


async def test_other_grants_and_shapes_are_refused(session: Session) -> None:
    assert (await session.token({"grant_type": "password"})).json() == {
        "error": "unsupported_grant_type"
    }
    as_json = await session.http.post("/token", json={"grant_type": "refresh_token"})
    assert as_json.json() == {"error": "invalid_request"}
    assert (await session.http.get("/token")).status_code == 405


# -- refresh, rotation, reuse -------------------------------------------------------------


async def test_refresh_rotates_and_a_reused_token_kills_the_family(session: Session) -> None:
    first = await session.tokens()
    second = (await session.refresh(first["refresh_token"])).json()
    assert second["refresh_token"] != first["refresh_token"]
    assert (await session.api(second["access_token"])).status_code == 200
    assert (await session.api(first["access_token"])).status_code == 200  # lives until expiry
    reused = await session.refresh(first["refresh_token"])
    assert (reused.status_code, reused.json()) == (400, {"error": "invalid_grant"})
    assert (await session.refresh(second["refresh_token"])).json()["error"] == "invalid_grant"
    assert (await session.api(second["access_token"])).status_code == 401
    assert not session.vendor.is_active(second["refresh_token"])
    assert session.vendor.refresh_calls == 3


async def test_refresh_may_narrow_the_scope_but_not_widen_it(session: Session) -> None:
    tokens = await session.tokens()
    form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    wider = await session.token({**form, "scope": "contacts.read contacts.write"})
    assert wider.json() == {"error": "invalid_scope"}


async def test_without_rotation_the_refresh_token_stays() -> None:
    vendor = FakeOAuthVendor(rotate_refresh_tokens=False, base_url=BASE)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=vendor), base_url=BASE) as http:
        session = Session(vendor, http)
        tokens = await session.tokens()
        for _ in range(2):
            renewed = (await session.refresh(tokens["refresh_token"])).json()
            assert "refresh_token" not in renewed and renewed["access_token"]


async def test_invalidated_grants_refuse_refresh(session: Session) -> None:
    alice, bob = await session.tokens("alice"), await session.tokens("bob")
    assert session.vendor.invalidate_grants("alice") == 1
    assert (await session.refresh(alice["refresh_token"])).json() == {"error": "invalid_grant"}
    assert (await session.api(alice["access_token"])).status_code == 401
    assert (await session.refresh(bob["refresh_token"])).status_code == 200


async def test_expired_access_tokens_are_refused(session: Session, clock: FakeClock) -> None:
    tokens = await session.tokens()
    assert session.vendor.expire_access_tokens() == 1
    answer = await session.api(tokens["access_token"])
    assert answer.status_code == 401
    assert 'error="invalid_token"' in answer.headers["www-authenticate"]
    fresh = (await session.refresh(tokens["refresh_token"])).json()
    assert (await session.api(fresh["access_token"])).status_code == 200
    clock.advance(3600)
    assert (await session.api(fresh["access_token"])).status_code == 401


# -- revocation ---------------------------------------------------------------------------


async def test_revoking_a_refresh_token_kills_its_family(session: Session) -> None:
    tokens = await session.tokens()
    other = await session.tokens("bob")
    answer = await session.http.post(
        "/revoke",
        data={"token": tokens["refresh_token"], "token_type_hint": "refresh_token"},
        headers=session.basic(),
    )
    assert answer.status_code == 200 and session.vendor.revoked == 1
    assert (await session.api(tokens["access_token"])).status_code == 401
    assert (await session.refresh(tokens["refresh_token"])).json()["error"] == "invalid_grant"
    assert (await session.api(other["access_token"])).status_code == 200


async def test_revoking_an_access_token_kills_only_it(session: Session) -> None:
    tokens = await session.tokens()
    await session.http.post(
        "/revoke", data={"token": tokens["access_token"]}, headers=session.basic()
    )
    assert (await session.api(tokens["access_token"])).status_code == 401
    assert (await session.refresh(tokens["refresh_token"])).status_code == 200


async def test_revoking_an_unknown_token_is_fine_but_needs_the_client(session: Session) -> None:
    unknown = await session.http.post("/revoke", data={"token": "nope"}, headers=session.basic())
    assert unknown.status_code == 200 and session.vendor.revoked == 0
    anonymous = await session.http.post("/revoke", data={"token": "nope"})
    assert anonymous.status_code == 401


# -- the API and the controls -------------------------------------------------------------


async def test_the_api_names_the_tokens_user_and_counts_per_user(session: Session) -> None:
    alice, bob = await session.tokens("alice"), await session.tokens("bob")
    for token, times in ((alice["access_token"], 3), (bob["access_token"], 2)):
        for _ in range(times):
            assert (await session.api(token)).status_code == 200
    assert (await session.http.get("/api/contacts")).status_code == 401
    assert (await session.api("vat_forged")).status_code == 401
    assert session.vendor.api_calls == Counter({"alice": 3, "bob": 2})


async def test_fail_next_answers_as_told_then_recovers(session: Session) -> None:
    tokens = await session.tokens()
    session.vendor.fail_next("refresh", 503, times=2)
    for _ in range(2):
        failed = await session.refresh(tokens["refresh_token"])
        assert (failed.status_code, failed.text) == (503, "injected")
    session.vendor.fail_next("token", 400, "invalid_grant")
    assert (await session.refresh(tokens["refresh_token"])).json() == {"error": "invalid_grant"}
    assert (await session.refresh(tokens["refresh_token"])).status_code == 200
    session.vendor.fail_next("api", 500, "server_error")
    assert (await session.api("anything")).status_code == 500
    assert session.vendor.refresh_calls == 4 and session.vendor.token_calls == 5


async def test_fail_next_at_authorize_redirects_with_the_error(session: Session) -> None:
    session.vendor.fail_next("authorize", 302, "temporarily_unavailable")
    params = session.authorize_params()
    answer = await session.http.get("/authorize", params=params)
    assert query_of(answer.headers["location"])["error"] == "temporarily_unavailable"
    with pytest.raises(ValueError, match="endpoint"):
        session.vendor.fail_next("nowhere", 500)  # type: ignore[arg-type]


async def test_counts_are_exact_under_concurrent_load_over_sockets() -> None:
    with served_vendor() as vendor:
        async with httpx.AsyncClient(base_url=vendor.issuer) as http:
            session = Session(vendor, http)
            tokens = {
                user: (await session.tokens(user))["access_token"] for user in ("alice", "bob")
            }
            seen: Counter[str] = Counter()
            observed: list[int] = []
            done = threading.Event()

            def watch() -> None:  # reads from another thread while the server writes
                while not done.is_set():
                    observed.append(sum(vendor.api_calls.values()))

            watcher = threading.Thread(target=watch)
            watcher.start()

            async def call(user: str) -> None:
                answer = await session.api(tokens[user])
                seen[answer.json()["vendor_user"]] += 1

            try:
                async with anyio.create_task_group() as tasks:
                    for index in range(60):
                        tasks.start_soon(call, ("alice", "bob")[index % 2])
            finally:
                done.set()
                watcher.join(timeout=10)
    assert seen == Counter({"alice": 30, "bob": 30})
    assert vendor.api_calls == seen
    assert observed == sorted(observed)


async def test_slow_down_delays_answers(session: Session) -> None:
    session.vendor.slow_down("metadata", 0.2)
    started = anyio.current_time()
    await session.http.get("/.well-known/oauth-authorization-server")
    assert anyio.current_time() - started >= 0.2
    session.vendor.slow_down("metadata", 0)
