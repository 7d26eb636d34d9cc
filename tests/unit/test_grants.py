from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from agentguard import Grants, Level, User

services = st.sampled_from(["crm", "automations", "projects", "billing"])
levels = st.sampled_from(list(Level))
grant_maps = st.dictionaries(services, levels)


def test_levels_are_ordered() -> None:
    assert Level.NONE < Level.READ < Level.WRITE


@pytest.mark.parametrize(
    ("text", "level"), [("read", Level.READ), (" WRITE ", Level.WRITE), ("none", Level.NONE)]
)
def test_level_parse(text: str, level: Level) -> None:
    assert Level.parse(text) is level


@pytest.mark.parametrize("bad", ["admin", "", 7, True, None])
def test_level_parse_rejects(bad: object) -> None:
    with pytest.raises(ValueError):
        Level.parse(bad)  # type: ignore[arg-type]


def test_absent_service_is_none_and_none_entries_drop() -> None:
    grants = Grants({"crm": "read", "projects": "none"})
    assert grants.level("projects") is Level.NONE
    assert list(grants) == ["crm"]
    assert grants == Grants({"crm": Level.READ})


def test_write_implies_read() -> None:
    grants = Grants({"crm": "write"})
    assert grants.allows("crm", Level.READ)
    assert grants.allows("crm", Level.WRITE)
    assert not grants.allows("projects", Level.READ)


def test_narrow_takes_minimum_and_never_widens() -> None:
    user = Grants({"crm": "read", "projects": "write"})
    scope = Grants({"crm": "write", "projects": "read", "billing": "write"})
    assert user.narrow(scope) == Grants({"crm": "read", "projects": "read"})
    assert user.narrow(None) is user


@given(grant_maps, grant_maps)
def test_narrowing_never_exceeds_either_side(
    user_map: dict[str, Level], scope_map: dict[str, Level]
) -> None:
    user, scope = Grants(user_map), Grants(scope_map)
    effective = user.narrow(scope)
    for service in ["crm", "automations", "projects", "billing"]:
        assert effective.level(service) <= user.level(service)
        assert effective.level(service) <= scope.level(service)


@given(grant_maps)
def test_scope_string_round_trip(levels_map: dict[str, Level]) -> None:
    grants = Grants(levels_map)
    assert Grants.from_scope(grants.to_scope()) == grants


def test_scope_repeated_service_keeps_highest() -> None:
    assert Grants.from_scope("crm:read crm:write") == Grants({"crm": "write"})


@pytest.mark.parametrize("bad", ["crm", "crm:admin", "CRM:read", "9x:read", ":read", "crm:read:x"])
def test_scope_parser_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        Grants.from_scope(bad)


_REFERENCE_TOKEN = re.compile(r"([a-z][a-z0-9_-]{0,62}):(none|read|write)", re.I | re.A)


def reference_scope(text: str) -> dict[str, str] | None:
    """RFC 6749 §3.3 scope tokens of the form ``service:level``, parsed apart from the model.

    Services are lower-case ASCII; levels are ASCII, any case; a repeated service keeps its
    highest level; ``none`` grants nothing. ``None`` when any token is not of that form.
    """
    order = ["none", "read", "write"]
    best: dict[str, str] = {}
    for token in text.split():
        match = _REFERENCE_TOKEN.fullmatch(token)
        if match is None or not match.group(1).islower():
            return None
        service, level = match.group(1), match.group(2).lower()
        if order.index(level) > order.index(best.get(service, "none")):
            best[service] = level
        best.setdefault(service, "none")
    return {service: level for service, level in best.items() if level != "none"}


_scope_tokens = st.one_of(
    st.text(max_size=12),
    st.builds(
        lambda service, level: f"{service}:{level}",
        st.from_regex(r"[a-zA-Z9_][a-z0-9_-]{0,4}", fullmatch=True),
        st.sampled_from(["read", "WRITE", "None", "admin", "wr\u0131te", "read ", ""]),
    ),
)


@given(st.lists(_scope_tokens, max_size=4).map(" ".join) | st.text())
def test_scope_parser_agrees_with_a_reference(text: str) -> None:
    expected = reference_scope(text)
    try:
        grants = Grants.from_scope(text)
    except ValueError:
        assert expected is None, f"{text!r} was refused; the reference reads {expected}"
        return
    assert expected is not None, f"{text!r} was accepted as {grants}"
    assert grants == Grants(expected)
    assert Grants.from_scope(grants.to_scope()) == grants  # round trip


def test_with_level_changes_one_service() -> None:
    grants = Grants({"crm": "read", "projects": "write"})
    assert grants.with_level("crm", "write") == Grants({"crm": "write", "projects": "write"})
    assert grants.with_level("projects", Level.NONE) == Grants({"crm": "read"})
    assert grants == Grants({"crm": "read", "projects": "write"})


def test_grants_are_immutable_and_hashable() -> None:
    grants = Grants({"crm": "read"})
    with pytest.raises(TypeError):
        grants["crm"] = Level.WRITE  # type: ignore[index]
    assert hash(grants) == hash(Grants({"crm": Level.READ}))


def test_pydantic_validation_and_serialisation() -> None:
    user = User(id="u1", account_id="a1", grants={"crm": "write"})  # type: ignore[arg-type]
    assert user.grants == Grants({"crm": "write"})
    assert user.model_dump()["grants"] == {"crm": "write"}
    assert User.model_validate_json(user.model_dump_json()) == user

    class Holder(BaseModel):
        grants: Grants

    assert Holder(grants="crm:read").grants == Grants({"crm": "read"})  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Holder(grants=3)  # type: ignore[arg-type]
