"""Tool grants (``service/tool:level``) beside service grants: parsing, canonical form,
narrowing that never widens, and the round trip through every place grants are stored."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentguard import Grants, Guard, Level, User
from agentguard.storage import MemoryStore, SQLiteStore
from agentguard.testing import make_user
from tests.backends.services import temporary_schema

SERVICES = ["crm", "notes", "a-1"]
TOOLS = ["add_note", "purge", "X.y-1"]
LEVELS = list(Level)
KEYS = SERVICES + [f"{s}/{t}" for s in SERVICES for t in TOOLS]

grants_st = st.dictionaries(st.sampled_from(KEYS), st.sampled_from(LEVELS), max_size=8).map(Grants)


def _levels(grants: Grants) -> dict[tuple[str, str | None], Level]:
    """What ``grants`` allow, everywhere in the test universe."""
    table: dict[tuple[str, str | None], Level] = {(s, None): grants.level(s) for s in SERVICES}
    table.update({(s, t): grants.tool_level(s, t) for s in SERVICES for t in TOOLS})
    return table


@given(grants_st)
def test_scope_dict_and_model_round_trips(grants: Grants) -> None:
    assert Grants.from_scope(grants.to_scope()) == grants
    assert Grants(grants.to_dict()) == grants
    assert Grants(json.loads(json.dumps(grants.to_dict()))) == grants
    user = User(id="u", account_id="a", grants=grants)
    assert User.model_validate_json(user.model_dump_json()).grants == grants
    assert (
        User.model_validate({"id": "u", "account_id": "a", "grants": grants.to_scope()}).grants
        == grants
    )
    assert list(grants) == sorted(s for s in SERVICES if grants.level(s) is not Level.NONE)


@given(grants_st, grants_st)
def test_narrowing_takes_the_minimum_everywhere_and_never_widens(user: Grants, key: Grants) -> None:
    narrowed = user.narrow(key)
    mine, theirs, result = _levels(user), _levels(key), _levels(narrowed)
    for place, level in result.items():
        assert level == min(mine[place], theirs[place]), place
    assert narrowed == key.narrow(user)  # the same minimum, the same canonical form
    assert narrowed.narrow(key) == narrowed
    assert user.narrow(None) is user


@given(grants_st, st.sampled_from(SERVICES), st.sampled_from(TOOLS))
def test_equal_permissions_compare_equal(grants: Grants, service: str, tool: str) -> None:
    padded = grants.with_tool_level(service, tool, grants.tool_level(service, tool))
    assert padded == grants and hash(padded) == hash(grants)
    assert padded.to_scope() == grants.to_scope()
    assert _levels(Grants.from_scope(grants.to_scope())) == _levels(grants)


def test_a_none_tool_entry_survives_narrowing_and_canonical_form() -> None:
    user = Grants.from_scope("notes:write notes/purge:none")
    assert user.tool_level("notes", "purge") is Level.NONE
    assert user.to_scope() == "notes:write notes/purge:none"
    for key in (None, Grants.from_scope("notes:write"), Grants.from_scope("notes:read")):
        assert not user.narrow(key).allows_tool("notes", "purge", Level.READ)
    assert Grants.from_scope("notes/purge:none") == Grants()  # no service to lower it from
    assert not Grants() and Grants.from_scope("notes/add_note:write")


def test_a_tool_entry_raises_one_tool_and_the_key_still_caps_it() -> None:
    user = Grants.from_scope("notes:read notes/add_note:write")
    assert user.allows_tool("notes", "add_note", Level.WRITE)
    assert not user.allows_tool("notes", "purge", Level.WRITE)
    assert not user.allows("notes", Level.WRITE)  # route rules see the service level only
    assert dict(user) == {"notes": Level.READ} and len(user) == 1
    assert user.tools == {("notes", "add_note"): Level.WRITE}
    assert not user.narrow(Grants.from_scope("notes:read")).allows_tool(
        "notes", "add_note", Level.WRITE
    )
    only_tool = user.narrow(Grants.from_scope("notes/add_note:write"))
    assert only_tool.level("notes") is Level.NONE
    assert only_tool.to_scope() == "notes/add_note:write"
    assert user.level("notes/add_note") is Level.WRITE
    assert user.with_level("notes/add_note", "none").tool_level("notes", "add_note") is Level.NONE


@pytest.mark.parametrize(
    ("scope", "message"),
    [
        ("notes", "scope token 1: a grant is 'service:level'"),
        ("crm:read notes/purge", "scope token 2: a grant is 'service:level'"),
        ("Notes:read", "a service name is"),
        (":read", "a service name is"),
        ("notes/:read", "a tool name is"),
        ("notes/a/b:read", "a tool name is"),
        ("notes/a,b:read", "a tool name is"),
        ("notes/" + "x" * 129 + ":read", "a tool name is"),
        ("notes/caf\u00e9:read", "a tool name is"),
        ("notes/add_note:admin", "a level is"),
        ("notes/add_note:wr\u0131te", "a level is"),
        ("notes:read:write", "one ':'"),
        ("notes/x\x00:read", "a tool name is"),
        ("crm/../notes:write", "a tool name is"),
    ],
)
def test_adversarial_tokens_are_refused_by_position(scope: str, message: str) -> None:
    with pytest.raises(ValueError, match="scope token") as raised:
        Grants.from_scope(scope)
    assert message in str(raised.value)
    assert "xxxxxxxx" not in str(raised.value)  # the token itself is never quoted back


def test_foreign_tokens_are_skipped_when_asked() -> None:
    scope = "openid crm:admin notes:read notes/add_note:write profile"
    assert (
        Grants.from_scope(scope, skip_foreign=True).to_scope() == "notes:read notes/add_note:write"
    )


@settings(max_examples=300)
@given(st.text(alphabet=st.sampled_from(list("crmnotes/_-.:aAdw ,\x00\u0131")), max_size=40))
def test_any_scope_text_parses_to_a_round_trip_or_a_value_error(text: str) -> None:
    try:
        grants = Grants.from_scope(text)
    except ValueError as error:
        message = str(error)
    else:
        assert Grants.from_scope(grants.to_scope()) == grants
        return
    assert message.startswith("scope token ")


async def _resolve_through(store: Any) -> None:
    guard = Guard(store)
    initialize = getattr(store, "initialize", None)
    if initialize is not None:
        await initialize()
    user = await make_user(
        store,
        user_id="u1",
        grants="notes:read notes/add_note:write notes/purge:none crm:write",
    )
    stored = await store.get_user(user.id)
    assert stored is not None and stored.grants == user.grants
    scope = Grants.from_scope("notes:write notes/add_note:write crm:read crm/sync:none")
    issued = await guard.issuer.issue(user.id, "ws-1", scope=scope)
    principal = await guard.resolve(issued.access_key.reveal())
    assert principal.grants.to_scope() == (
        "crm:read crm/sync:none notes:read notes/add_note:write notes/purge:none"
    )
    assert principal.grants.allows_tool("notes", "add_note", Level.WRITE)
    assert not principal.grants.allows_tool("crm", "sync", Level.READ)


@pytest.mark.anyio
async def test_memory_and_sqlite_keep_tool_grants(tmp_path: Path) -> None:
    await _resolve_through(MemoryStore())
    store = SQLiteStore(tmp_path / "grants.db")
    try:
        await _resolve_through(store)
    finally:
        await store.close()


@pytest.mark.anyio
async def test_postgres_keeps_tool_grants() -> None:
    from agentguard.storage import PostgresStore

    async with temporary_schema() as (dsn, schema):
        store = PostgresStore(dsn, schema=schema)
        try:
            await _resolve_through(store)
        finally:
            await store.close()
