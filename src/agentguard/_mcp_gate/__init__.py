"""The MCP tool gate: per-tool permissions checked before an MCP server runs a tool.

Used by :class:`agentguard.integrations.mcp.AgentGuardMCP` (an SDK app in this process) and by
the gateway for a service with ``mcp = true`` (a remote MCP server). Needs no MCP SDK.
"""

from agentguard._mcp_gate._gate import DEFAULT_MAX_BODY_BYTES, ToolGate, gated_tools, tool_event
from agentguard._mcp_gate._requirements import (
    ToolNeed,
    ToolRequirements,
    register_tool,
    registered_needs,
)

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "ToolGate",
    "ToolNeed",
    "ToolRequirements",
    "gated_tools",
    "register_tool",
    "registered_needs",
    "tool_event",
]
