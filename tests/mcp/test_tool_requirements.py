"""Where a tool's requirement comes from: the explicit mapping, then ``require_tool``'s
registration, then the annotations a listing showed (``readOnlyHint``), else write."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from agentguard import Grants, Guard, Level, Principal
from agentguard._mcp_gate import ToolGate, ToolNeed, ToolRequirements, register_tool
from agentguard._mcp_gate._listing import ListingFilter
from agentguard.errors import ConfigurationError
from agentguard.integrations.mcp import require_tool
from agentguard.storage import MemoryStore


def test_the_explicit_mapping_comes_first_then_registrations_then_the_default() -> None:
    register_tool("req_registered", "crm", Level.READ)
    tools = ToolRequirements("notes", {"req_registered": "write", "req_other": "crm:read"})
    assert tools.needs("req_registered") == {ToolNeed("notes", Level.WRITE)}
    assert tools.needs("req_other") == {ToolNeed("crm", Level.READ)}
    assert ToolRequirements("notes").needs("req_registered") == {ToolNeed("crm", Level.READ)}
    remote = ToolRequirements("notes", registry=False)
    assert remote.needs("req_registered") == {ToolNeed("notes", Level.WRITE)}
    assert ToolRequirements(None).needs("req_unknown") == frozenset()


def test_require_tool_registers_under_the_tool_name_and_conflicts_need_both() -> None:
    @require_tool("notes", "write", name="req_renamed")
    async def anything() -> None: ...

    assert ToolRequirements(None).needs("req_renamed") == {ToolNeed("notes", Level.WRITE)}
    register_tool("req_renamed", "crm", Level.READ)
    assert ToolRequirements(None).needs("req_renamed") == {
        ToolNeed("notes", Level.WRITE),
        ToolNeed("crm", Level.READ),
    }


def test_read_only_annotations_lower_the_default_and_are_learned() -> None:
    tools = ToolRequirements("notes")
    assert tools.needs("req_count") == {ToolNeed("notes", Level.WRITE)}  # never listed: write
    assert tools.needs("req_count", {"readOnlyHint": True}) == {ToolNeed("notes", Level.READ)}
    assert tools.needs("req_count", {"readOnlyHint": "true"}) == {ToolNeed("notes", Level.WRITE)}
    assert tools.needs("req_count", None) == {ToolNeed("notes", Level.WRITE)}
    tools.learn("req_count", {"readOnlyHint": True})
    assert tools.needs("req_count") == {ToolNeed("notes", Level.READ)}
    tools.learn("req_count", {})
    assert tools.needs("req_count") == {ToolNeed("notes", Level.WRITE)}


@pytest.mark.parametrize(
    ("service", "tools", "message"),
    [
        (None, {"a": "write"}, "needs the adapter's service"),
        ("notes", {"a": "none"}, "read or write"),
        ("notes", {"a": "admin"}, "unknown level"),
        ("notes", {"a": "Crm:read"}, "a service name is"),
    ],
)
def test_a_bad_mapping_is_a_configuration_error(
    service: str | None, tools: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        ToolRequirements(service, tools)


def test_scope_tokens_name_the_tool_unless_it_cannot_be_one() -> None:
    assert ToolNeed("notes", Level.WRITE).scope("add_note") == "notes/add_note:write"
    assert ToolNeed("notes", Level.READ).scope("a/b c") == "notes:read"


def test_get_streams_and_listing_posts_are_filtered_other_posts_are_not() -> None:
    guard = Guard(MemoryStore())
    gate = ToolGate(guard, ToolRequirements("notes"))
    principal = Principal(
        "u", "ws", "a", "k", "f", Grants.from_scope("notes:read"), datetime.now(timezone.utc)
    )

    async def send(message: object) -> None: ...

    get = gate.filtered({"type": "http", "method": "GET"}, send, principal, None)
    assert isinstance(get, ListingFilter)
    post = gate.filtered({"type": "http", "method": "POST"}, send, principal, None)
    delete = gate.filtered({"type": "http", "method": "DELETE"}, send, principal, None)
    assert post is send and delete is send
    assert gate.allows(principal, "count", {"readOnlyHint": True})
    assert not gate.allows(principal, "purge", None)
    with pytest.raises(ValueError, match="positive"):
        ToolGate(guard, ToolRequirements("notes"), max_body_bytes=0)
