"""Thin adapters for frameworks built on the ASGI layer: FastAPI and the MCP Python SDK.

Import the submodule you need (``agentguard.integrations.fastapi``,
``agentguard.integrations.mcp``); each imports its framework, so this package imports none.
"""
