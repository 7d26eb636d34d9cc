"""The MCP tool gate: per-tool grants, checked before the server runs a tool."""
