"""``request.user`` / ``request.auth`` on guarded routes, and ``unauthenticated="pass"``.

The middleware sets Starlette's ``scope["user"]`` and ``scope["auth"]`` from the live Principal,
so ``@requires("crm:write")`` decides on this request's grants. With ``unauthenticated="pass"``
a request that carries no agentguard credential at all reaches the app unauthenticated and
unaudited; anything that carries our scheme, a DPoP proof or a key anywhere is still decided.
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.authentication import requires
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from agentguard import Grants, Guard, IssuedKeys, RouteRule, User
from agentguard.asgi import AgentGuardMiddleware
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock, make_user

pytestmark = pytest.mark.anyio
SHAPED = "ag_at_" + "A" * 49  # key-shaped, names no key


@dataclass
class Site:
    store: MemoryStore
    guard: Guard
    user: User
    keys: IssuedKeys
    reached: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return self.keys.access_key.reveal()

    def client(self, unauthenticated: str = "refuse") -> httpx.AsyncClient:
        app = build_app(self.reached)
        guarded = AgentGuardMiddleware(
            app,
            self.guard,
            unauthenticated=unauthenticated,  # type: ignore[arg-type]
        )
        transport = httpx.ASGITransport(app=guarded)
        return httpx.AsyncClient(transport=transport, base_url="http://testserver")

    async def audit_size(self) -> int:
        await self.guard.audit.flush()  # refusal summaries too
        return len(await self.store.read())

    async def events(self) -> list[dict[str, object]]:
        return [entry.event() for entry in await self.store.read()]


def build_app(reached: list[str]) -> Starlette:
    def who(request: Request) -> JSONResponse:
        reached.append(request.url.path)
        return JSONResponse(
            {
                "authenticated": request.user.is_authenticated,
                "user": request.user.display_name,
                "identity": request.user.identity,
                "scopes": sorted(request.auth.scopes),
            }
        )

    @requires("crm:write")
    async def write_contacts(request: Request) -> JSONResponse:
        return who(request)

    @requires("authenticated")
    async def members(request: Request) -> JSONResponse:
        return who(request)

    async def anyone(request: Request) -> JSONResponse:
        return who(request)

    return Starlette(
        routes=[
            Route("/crm/contacts", write_contacts, methods=["POST"]),
            Route("/members", members),
            Route("/{rest:path}", anyone, methods=["GET", "POST"]),
        ]
    )


@pytest.fixture
async def site() -> Site:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    guard = Guard(store, rules=[RouteRule("/", service=None)], clock=clock)  # any live key
    user = await make_user(store, grants="crm:write projects:read")
    keys = await guard.issuer.issue(user.id, "ws-1")
    return Site(store, guard, user, keys)


@pytest.fixture(autouse=True)
def quiet_test_client() -> Iterator[None]:
    """httpx logs each URL it requests, and some here carry a key on purpose: that record is
    the test client's, not the guard's, and would trip the session's secrets canary."""
    logger = logging.getLogger("httpx")
    level = logger.level
    logger.setLevel(logging.WARNING)
    yield
    logger.setLevel(level)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# -- request.user and @requires on guarded routes ------------------------------------------


async def test_request_user_is_the_principal_with_its_live_grants_as_scopes(site: Site) -> None:
    async with site.client() as client:
        response = await client.get("/whoami", headers=bearer(site.key))
    assert response.status_code == 200
    assert response.json() == {
        "authenticated": True,
        "user": "user-1",
        "identity": "user-1",
        "scopes": ["authenticated", "crm:read", "crm:write", "projects:read"],
    }


async def test_requires_follows_a_grant_lowered_between_two_requests(site: Site) -> None:
    async with site.client() as client:
        first = await client.post("/crm/contacts", headers=bearer(site.key))
        lowered = Grants.from_scope("crm:read")
        await site.store.put_user(site.user.model_copy(update={"grants": lowered}))
        second = await client.post("/crm/contacts", headers=bearer(site.key))
        scopes = (await client.get("/whoami", headers=bearer(site.key))).json()["scopes"]
    assert first.status_code == 200
    assert second.status_code == 403
    assert scopes == ["authenticated", "crm:read"]


async def test_scopes_are_the_grants_narrowed_by_the_keys_own_scope(site: Site) -> None:
    narrowed = await site.guard.issuer.issue(
        site.user.id, "ws-1", scope=Grants.from_scope("crm:read")
    )
    async with site.client() as client:
        who = await client.get("/whoami", headers=bearer(narrowed.access_key.reveal()))
        write = await client.post("/crm/contacts", headers=bearer(narrowed.access_key.reveal()))
    assert who.json()["scopes"] == ["authenticated", "crm:read"]
    assert write.status_code == 403


# -- unauthenticated="pass" ----------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Digest username=x"}],
    ids=["no-header", "basic", "digest"],
)
async def test_pass_mode_lets_a_request_without_our_credentials_through_unaudited(
    site: Site, headers: dict[str, str]
) -> None:
    before = await site.audit_size()
    async with site.client("pass") as client:
        response = await client.get("/whoami", headers=headers)
        members = await client.get("/members", headers=headers)
        write = await client.post("/crm/contacts", headers=headers)
    assert response.status_code == 200
    assert response.json() == {"authenticated": False, "user": "", "identity": "", "scopes": []}
    assert (members.status_code, write.status_code) == (403, 403)  # @requires still guards
    assert await site.audit_size() == before


@pytest.mark.parametrize(
    ("headers", "query", "status"),
    [
        ([("Authorization", "Bearer garbage")], "", 401),
        ([("Authorization", "Basic dXNlcjpwYXNz")], "token={key}", 400),
        ([("Authorization", "Basic dXNlcjpwYXNz"), ("Authorization", "Basic eDp5")], "", 400),
        ([("DPoP", "eyJhbGciOiJFUzI1NiJ9.e30.c2ln")], "", 401),
        ([("Authorization", "Basic dXNlcjpwYXNz"), ("X-Api-Key", "{key}")], "", 400),
        ([("Authorization", "BEARER {key}"), ("Authorization", "Basic eDp5")], "", 400),
    ],
    ids=["bearer-garbage", "key-in-query", "two-authorizations", "dpop-alone", "key-in-header",
         "bearer-and-basic"],
)  # fmt: skip
async def test_pass_mode_still_decides_anything_carrying_our_credentials(
    site: Site, headers: list[tuple[str, str]], query: str, status: int
) -> None:
    sent = [(name, value.replace("{key}", site.key)) for name, value in headers]
    async with site.client("pass") as client:
        url = "/whoami?" + query.replace("{key}", site.key) if query else "/whoami"
        response = await client.get(url, headers=sent)
    assert response.status_code == status
    assert "error" in response.json() or "reason" in response.json()
    assert site.reached == []


async def test_a_refused_key_outside_the_credential_position_is_audited_as_its_owners(
    site: Site,
) -> None:
    async with site.client("pass") as client:
        response = await client.get(
            f"/whoami?token={site.key}", headers={"Authorization": "Basic dXNlcjpwYXNz"}
        )
    assert response.status_code == 400
    last = (await site.events())[-1]
    assert (last["action"], last["decision"]) == ("guard.decision", "deny")
    assert last["actor"]["key_id"] == site.keys.access.id  # type: ignore[index]
    assert site.key not in str(last)


async def test_pass_mode_still_admits_a_valid_key(site: Site) -> None:
    async with site.client("pass") as client:
        response = await client.get("/whoami", headers=bearer(site.key))
    assert response.json()["authenticated"] is True


async def test_default_mode_refuses_basic_as_before(site: Site) -> None:
    async with site.client() as client:
        response = await client.get("/whoami", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert response.status_code == 400
    assert response.json()["reason"] == "unsupported_scheme"
    assert site.reached == []


def test_unauthenticated_takes_only_refuse_or_pass() -> None:
    store = MemoryStore()
    with pytest.raises(ValueError, match="refuse"):
        AgentGuardMiddleware(Starlette(), Guard(store), unauthenticated="allow")  # type: ignore[arg-type]


async def test_pass_mode_decides_a_key_hidden_in_basic_credentials(site: Site) -> None:
    hidden = base64.b64encode(f"agent:{site.key}".encode()).decode()
    async with site.client("pass") as client:
        response = await client.get("/whoami", headers={"Authorization": f"Basic {hidden}"})
    assert response.status_code == 400
    assert site.reached == []


async def test_pass_mode_decides_a_percent_encoded_key_in_the_query(site: Site) -> None:
    encoded = "".join(f"%{byte:02X}" for byte in site.key.encode())
    async with site.client("pass") as client:
        response = await client.get(f"/whoami?token={encoded}")
    assert response.status_code in (400, 401)
    assert site.reached == []


# -- hypothesis: header combinations against a small oracle --------------------------------

AUTHORIZATIONS = st.sampled_from(
    ["Bearer {key}", "bearer {key}", "Bearer garbage", "Bearer", "Basic dXNlcjpwYXNz",
     "Digest username=x", "DPoP {key}", "Token abc", "Basic {shaped}", ""]
)  # fmt: skip
EXTRAS = st.sampled_from(
    [None, ("x-api-key", "{key}"), ("cookie", "s={shaped}"), ("x-note", "hello"),
     ("dpop", "eyJhbGciOiJFUzI1NiJ9.e30.c2ln")]
)  # fmt: skip


def carries_our_credentials(
    authorizations: list[str], extra: tuple[str, str] | None, query: str, path: str
) -> bool:
    """The oracle: our scheme (or a scheme not plainly another), a DPoP proof, two
    Authorization fields, or a key anywhere."""
    if len(authorizations) > 1:
        return True
    if authorizations:
        # Passed on only when it plainly names another scheme: a token, then a space or the end.
        named = re.fullmatch(r"([!#$%&'*+.^_`|~0-9A-Za-z-]+)(?: [\x20-\x7e]*)?", authorizations[0])
        if named is None or named.group(1).lower() == "bearer":
            return True
    places = [*authorizations, query, path]
    if extra is not None:
        if extra[0] == "dpop":
            return True
        places.append(extra[1])
    return any("ag_at_" in place for place in places)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    authorizations=st.lists(AUTHORIZATIONS, max_size=2),
    extra=EXTRAS,
    query=st.sampled_from(["", "q=1", "token={key}", "t={shaped}"]),
    path=st.sampled_from(["/app/items", "/app/{shaped}"]),
)
async def test_pass_mode_matches_the_oracle(
    site: Site,
    authorizations: list[str],
    extra: tuple[str, str] | None,
    query: str,
    path: str,
) -> None:
    def fill(text: str) -> str:
        return text.replace("{key}", site.key).replace("{shaped}", SHAPED)

    authorizations = [fill(value) for value in authorizations]
    query, path = fill(query), fill(path)
    extra = None if extra is None else (extra[0], fill(extra[1]))
    headers = [("Authorization", value) for value in authorizations]
    if extra is not None:
        headers.append(extra)
    site.reached.clear()
    before = await site.audit_size()
    async with site.client("pass") as client:
        response = await client.get(path + ("?" + query if query else ""), headers=headers)
    passed_unauthenticated = response.status_code == 200 and not response.json()["authenticated"]
    if carries_our_credentials(authorizations, extra, query, path):
        assert not passed_unauthenticated
        assert await site.audit_size() > before  # decided, so audited (counted or its own event)
    else:
        assert passed_unauthenticated
        assert await site.audit_size() == before
