"""Key audiences (RFC 8707): the resource parser, issuance, refresh narrowing at the token
endpoint, introspection, the runtime's ``resource`` and :func:`check_audience`'s policy."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentguard import Guard, IssuedKeys
from agentguard._audience import (
    AUDIENCE_REQUIRED,
    INVALID_TARGET,
    WRONG_AUDIENCE,
    InvalidTarget,
    canonical_resource,
    check_audience,
    covers,
    narrow_audience,
)
from agentguard._model import Grants, Principal
from agentguard.asgi import OAuthApp
from agentguard.client import AgentAuth, AgentCredentials
from agentguard.errors import InvalidToken, UsageError
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock, make_user

pytestmark = pytest.mark.anyio

MCP = "https://api.example.com/mcp"
SECRET = "introspect-" + "s" * 32


# The parser


@pytest.mark.parametrize(
    ("given_", "canonical"),
    [
        ("https://API.Example.com:443/mcp", MCP),
        ("https://api.example.com", "https://api.example.com/"),
        ("http://127.0.0.1:8000/a/./b/../mcp", "http://127.0.0.1:8000/a/mcp"),
        ("https://api.example.com/%7euser", "https://api.example.com/~user"),
    ],
)
def test_resources_are_normalised(given_: str, canonical: str) -> None:
    assert canonical_resource(given_) == canonical


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "/mcp",
        "mcp",
        "urn:example:mcp",
        "ftp://api.example.com/",
        "https://api.example.com/mcp#frag",
        "https://api.example.com/mcp?x=1",
        "https://api.example.com/mcp?",
        "https://user@api.example.com/mcp",
        "https://api.example.com/m cp",
        "https://api.example.com/é",
        "https:///mcp",
        "https://api.example.com:99999/",
        "https://" + "a" * 2048 + ".com/",
    ],
)
def test_malformed_resources_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        canonical_resource(bad)


@given(st.text(max_size=80))
def test_any_text_is_a_resource_or_a_value_error(text: str) -> None:
    for candidate in (text, "https://" + text, "https://api.example.com/" + text):
        try:
            canonical = canonical_resource(candidate)
        except ValueError:
            continue
        assert canonical_resource(canonical) == canonical  # idempotent
        assert covers(candidate, canonical) and covers(canonical, candidate)


@given(st.lists(st.from_regex(r"[a-z0-9]{1,6}", fullmatch=True), min_size=1, max_size=4))
def test_an_audience_covers_its_subpaths_and_nothing_beside(segments: list[str]) -> None:
    audience = "https://api.example.com/" + "/".join(segments)
    assert covers(audience, audience + "/")
    assert covers(audience, audience + "/tools/x")
    assert not covers(audience, audience + "x")
    assert not covers(audience + "/x", audience)
    assert covers("https://api.example.com", audience)
    assert not covers(audience, audience.replace("https://", "http://"))
    assert not covers(audience, audience.replace("api.", "other."))


def test_a_refresh_keeps_or_narrows_the_audience_never_switches() -> None:
    assert narrow_audience(None, None) is None
    assert narrow_audience(MCP, None) == MCP
    assert narrow_audience(None, "https://API.example.com/mcp/") == MCP + "/"
    assert narrow_audience("https://api.example.com/", MCP) == MCP
    assert narrow_audience(MCP, MCP + "/tools") == MCP + "/tools"
    for requested in ("https://api.example.com/other", "https://evil.example/mcp", "nope"):
        with pytest.raises(InvalidTarget) as refused:
            narrow_audience(MCP, requested)
        status, _, body = refused.value.to_http()
        assert status == 400
        assert b'"error":"invalid_target"' in body
        assert refused.value.reason is INVALID_TARGET


# check_audience


def _principal(audience: str | None) -> Principal:
    return Principal(
        user_id="u1",
        workspace_id="w1",
        account_id="a1",
        key_id="key_1",
        family_id="fam_1",
        grants=Grants({"notes": "write"}),
        expires_at=FakeClock().now() + timedelta(hours=1),
        audience=audience,
    )


def test_check_audience_accepts_the_resource_and_what_it_covers() -> None:
    check_audience(_principal(MCP), MCP, require=True)
    check_audience(_principal("https://api.example.com"), MCP, require=True)
    check_audience(_principal(None), MCP, require=False)  # the compatible default


@pytest.mark.parametrize(
    ("audience", "require", "reason"),
    [
        ("https://other.example/mcp", False, WRONG_AUDIENCE),
        ("https://api.example.com/mcp2", True, WRONG_AUDIENCE),
        ("not a url at all", False, WRONG_AUDIENCE),  # a stored value that does not parse
        (None, True, AUDIENCE_REQUIRED),
    ],
)
def test_check_audience_refuses_with_invalid_token(
    audience: str | None, require: bool, reason: object
) -> None:
    with pytest.raises(InvalidToken) as refused:
        check_audience(_principal(audience), MCP, require=require)
    error = refused.value
    assert error.reason is reason
    assert (error.status, error.code) == (401, "invalid_token")
    assert error.audit_context["key_id"] == "key_1"
    assert "other.example" not in error.description  # names no URL the key carries


def test_check_audience_with_a_malformed_own_resource_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        check_audience(_principal(MCP), "not-a-resource", require=False)


# Issuance, refresh and introspection


async def _setup(audience: str | None = None) -> tuple[Guard, IssuedKeys, httpx.AsyncClient]:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    guard = Guard(store, clock=clock)
    user = await make_user(store, grants="notes:write")
    keys = await guard.issuer.issue(user.id, "ws-1", audience=audience)
    app = OAuthApp(guard, introspection_secrets=[SECRET])
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://as")
    return guard, keys, client


async def _stored_audience(guard: Guard, key: str) -> str | None:
    return (await guard.lookup(key)).key.audience


async def test_issue_stores_the_normalised_audience_and_audits_it() -> None:
    guard, keys, client = await _setup("https://API.example.com:443/mcp")
    async with client:
        assert keys.access.audience == keys.refresh.audience == MCP
        assert await _stored_audience(guard, keys.access_key.reveal()) == MCP
    events = [entry.event() for entry in await guard.store.read()]  # type: ignore[attr-defined]
    assert events[-1]["detail"]["audience"] == MCP
    with pytest.raises(UsageError, match="RFC 8707"):
        await guard.issuer.issue(keys.access.user_id, "ws-1", audience="https://x/#frag")


async def test_refresh_with_resource_narrows_and_later_refreshes_keep_it() -> None:
    guard, keys, client = await _setup()
    async with client:
        first = await client.post(
            "/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": keys.refresh_key.reveal(),
                "resource": MCP,
            },
        )
        assert first.status_code == 200, first.text
        access = first.json()["access_token"]
        assert await _stored_audience(guard, access) == MCP
        kept = await client.post(
            "/token",
            data={"grant_type": "refresh_token", "refresh_token": first.json()["refresh_token"]},
        )
        assert kept.status_code == 200
        assert await _stored_audience(guard, kept.json()["access_token"]) == MCP
        introspected = await client.post(
            "/introspect",
            data={"token": kept.json()["access_token"]},
            headers={"authorization": f"Bearer {SECRET}"},
        )
    assert introspected.json()["aud"] == MCP


@pytest.mark.parametrize(
    "resource", ["https://evil.example/mcp", "https://api.example.com/other", "", "mcp", MCP + "#x"]
)
async def test_refresh_to_another_or_a_malformed_resource_is_invalid_target(
    resource: str,
) -> None:
    guard, keys, client = await _setup(MCP)
    form = {
        "grant_type": "refresh_token",
        "refresh_token": keys.refresh_key.reveal(),
        "resource": resource,
    }
    async with client:
        refused = await client.post("/token", data=form)
        assert refused.status_code == 400
        assert refused.headers["cache-control"] == "no-store"
        assert "www-authenticate" not in refused.headers
        body = refused.json()
        assert body["error"] == "invalid_target"
        assert set(body) == {"error", "error_description", "reason"}
        assert body["reason"] == INVALID_TARGET.value
        # the refresh key was not spent: the same key still refreshes (keeping the audience)
        form.pop("resource")
        again = await client.post("/token", data=form)
    assert again.status_code == 200
    events = [entry.event() for entry in await guard.store.read()]  # type: ignore[attr-defined]
    denied = [e for e in events if e["action"] == "key.refresh" and e["decision"] == "deny"]
    assert denied and denied[0]["actor"]["key_id"] == keys.refresh.id


async def test_the_runtime_sends_its_resource_with_each_refresh() -> None:
    guard, keys, client = await _setup()
    await client.aclose()
    app = OAuthApp(guard)
    credentials = AgentCredentials(
        access_key=keys.access_key,
        refresh_key=keys.refresh_key,
        issued_at=keys.access.created_at,
        expires_at=keys.access.expires_at,
        token_url="http://as/token",
        token_type="Bearer",
    )
    auth = AgentAuth(
        credentials,
        clock=guard.clock,
        resource=MCP,
        async_token_transport=httpx.ASGITransport(app=app),
    )
    assert await auth.arenew(fraction=0)
    assert await _stored_audience(guard, auth.credentials.access_key.reveal()) == MCP
    with pytest.raises(ValueError):
        AgentAuth(credentials, resource="https://x.example/mcp?q=1")
