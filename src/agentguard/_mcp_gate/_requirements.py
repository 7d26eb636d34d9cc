"""What each MCP tool needs: a level on a service, known before the tool is called.

In order, the first that knows the tool decides:

1. the explicit mapping given to the adapter or the gateway (``tools = {add_note = "write"}``),
2. :func:`~agentguard.integrations.mcp.require_tool`, which registers its requirement under the
   tool's name when the tool is defined (several different registrations under one name are all
   required: fail closed),
3. the default: the adapter's or gateway service's ``service`` at ``read`` when the tool's MCP
   annotations say ``readOnlyHint: true``, else at ``write``. Annotations come with each
   ``tools/list`` response; a call to a tool no listing has shown yet needs ``write``.

The annotations are the server's own claim about its tools; the server is the one this gate
fronts, so the claim is trusted the way its code is. Tool names that do not follow the MCP
naming rule cannot carry a tool grant of their own: they need their service's level.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agentguard._model import TOOL_NAME_PATTERN, Grants, Level
from agentguard.errors import ConfigurationError

__all__ = ["ToolNeed", "ToolRequirements", "register_tool", "registered_needs"]

#: How many tools' annotations one gate remembers (a bound against a server listing endless
#: names); tools beyond it keep the default of ``write`` until named explicitly.
LEARNED_TOOLS = 4096
#: ``needs()`` without annotations: use what earlier listings showed.
UNSEEN: Any = object()


@dataclass(frozen=True, slots=True, order=True)
class ToolNeed:
    """One requirement of a tool: ``level`` on ``service``."""

    service: str
    level: Level

    def scope(self, tool: str) -> str:
        """The scope token that grants it: ``notes/add_note:write`` (``notes:write`` for a tool
        whose name cannot be a tool grant)."""
        if TOOL_NAME_PATTERN.match(tool):
            return f"{self.service}/{tool}:{self.level.label}"
        return f"{self.service}:{self.level.label}"

    def allowed(self, grants: Grants, tool: str) -> bool:
        """Whether ``grants`` reach this requirement for ``tool``."""
        return grants.allows_tool(self.service, tool, self.level)


_registry_lock = threading.Lock()
_registered: dict[str, frozenset[ToolNeed]] = {}


def register_tool(name: str, service: str, level: Level) -> None:
    """Record that tool ``name`` needs ``level`` on ``service`` (what ``require_tool`` does)."""
    need = ToolNeed(service, level)
    with _registry_lock:
        _registered[name] = _registered.get(name, frozenset()) | {need}


def registered_needs(name: str) -> frozenset[ToolNeed]:
    """Every requirement registered under tool ``name`` (empty when none)."""
    return _registered.get(name, frozenset())


def _explicit(tool: str, value: Level | str, service: str | None) -> ToolNeed:
    named: str | None = service
    text: Level | str = value
    if isinstance(value, str) and ":" in value:  # "crm:write": a service of its own
        named, _, text = value.partition(":")
        try:
            Grants.from_scope(f"{named}:read")
        except ValueError as error:
            raise ConfigurationError(f"tool {tool!r}: {error}") from None
    if named is None:
        raise ConfigurationError(
            f"tool {tool!r}: a bare level needs the adapter's service (pass service=...)"
        )
    try:
        level = Level.parse(text)
    except ValueError as error:
        raise ConfigurationError(f"tool {tool!r}: {error}") from None
    if level is Level.NONE:
        raise ConfigurationError(f"tool {tool!r}: a tool needs read or write, not none")
    return ToolNeed(named, level)


def read_only(annotations: Any) -> bool:
    """Whether MCP tool annotations say ``readOnlyHint: true`` (exactly the JSON ``true``)."""
    return isinstance(annotations, Mapping) and annotations.get("readOnlyHint") is True


class ToolRequirements:
    """Resolves each tool's requirements for one gate.

    Args:
        service: the service a tool belongs to when nothing more specific names one; ``None``
            refuses every such tool (no requirement is known for it).
        tools: explicit requirements by tool name: a level on ``service`` (``"write"``) or a
            level on another service (``"crm:read"``). They come first.
        registry: whether :func:`require_tool <agentguard.integrations.mcp.require_tool>`
            registrations count (in-process SDK tools; a proxied remote server has none).
    """

    def __init__(
        self,
        service: str | None,
        tools: Mapping[str, Level | str] | None = None,
        *,
        registry: bool = True,
    ) -> None:
        if service is not None:
            Grants.from_scope(f"{service}:read")  # the service name's rules, as in scopes
        self.service = service
        self.registry = registry
        self._explicit = {
            name: _explicit(name, value, service) for name, value in (tools or {}).items()
        }
        self._learned: dict[str, bool] = {}

    def __repr__(self) -> str:
        return f"ToolRequirements(service={self.service!r}, tools={sorted(self._explicit)!r})"

    def needs(self, tool: str, annotations: Any = UNSEEN) -> frozenset[ToolNeed]:
        """What calling ``tool`` needs; empty when nothing is known (the call is refused).

        ``annotations`` are the tool's MCP annotations as a listing shows them (``None``: it
        shows none); left out, what earlier listings showed is used.
        """
        explicit = self._explicit.get(tool)
        if explicit is not None:
            return frozenset({explicit})
        if self.registry:
            registered = registered_needs(tool)
            if registered:
                return registered
        if self.service is None:
            return frozenset()
        seen = self._learned.get(tool) if annotations is UNSEEN else read_only(annotations)
        return frozenset({ToolNeed(self.service, Level.READ if seen else Level.WRITE)})

    def learn(self, tool: str, annotations: Any) -> None:
        """Remember what a listing said of ``tool`` (bounded by ``LEARNED_TOOLS``)."""
        if tool in self._learned or len(self._learned) < LEARNED_TOOLS:
            self._learned[tool] = read_only(annotations)
