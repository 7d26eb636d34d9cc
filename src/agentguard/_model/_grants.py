"""Permission levels and per-service grants, with per-tool entries and the narrowing arithmetic.

A user's grants are the ceiling: a key may carry an optional scope that narrows them, and the
effective grants of a request are the minimum of the two, service by service and tool by tool.
Nothing here can widen.

A grant is a scope token. ``service:level`` (``notes:read``) sets a service's level;
``service/tool:level`` (``notes/add_note:write``, ``notes/purge:none``) sets one MCP tool's
level on that service, raising or lowering it from the service's. Service names never contain
``/``, so the two forms cannot be confused.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

__all__ = ["SERVICE_NAME_PATTERN", "TOOL_NAME_PATTERN", "Grants", "Level"]

SERVICE_NAME_PATTERN = re.compile(r"[a-z][a-z0-9_-]{0,62}\Z")
#: An MCP tool name as the specification (2025-11-25, "Tool names") asks: 1 to 128 ASCII
#: letters, digits, ``_``, ``-`` or ``.``; case-sensitive.
TOOL_NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,128}\Z")


class Level(enum.IntEnum):
    """Access level on one service, ordered ``NONE < READ < WRITE`` (write implies read)."""

    NONE = 0
    READ = 1
    WRITE = 2

    @classmethod
    def parse(cls, value: Level | str | int) -> Level:
        """A Level from its name (``"read"``), its number, or itself; ``ValueError`` otherwise."""
        if isinstance(value, Level):
            return value
        if isinstance(value, str):
            try:  # ASCII only: str.upper() reads "wr\u0131te" (dotless i) as WRITE
                return cls[value.strip().upper()] if value.isascii() else cls["?"]
            except KeyError:
                raise ValueError(f"unknown level {value!r}; use none, read or write") from None
        if isinstance(value, int) and not isinstance(value, bool):
            return cls(value)
        raise ValueError("a level is 'none', 'read' or 'write'")

    @property
    def label(self) -> str:
        """The lower-case name used in scopes and configuration (``"read"``)."""
        return self.name.lower()


def _check_service(name: object) -> str:
    if not isinstance(name, str) or not SERVICE_NAME_PATTERN.match(name):
        raise ValueError(
            "a service name is 1-63 characters of a-z, 0-9, '_' or '-', starting with a letter"
        )
    return name


def _check_tool(name: object) -> str:
    if not isinstance(name, str) or not TOOL_NAME_PATTERN.match(name):
        raise ValueError(
            "a tool name is 1-128 characters of A-Z, a-z, 0-9, '_', '-' or '.' (MCP tool names)"
        )
    return name


def _split_key(key: object) -> tuple[str, str | None]:
    """``"notes"`` -> ``("notes", None)``; ``"notes/add_note"`` -> ``("notes", "add_note")``."""
    if not isinstance(key, str):
        raise ValueError("a grant names a service ('notes') or a tool ('notes/add_note')")
    service, slash, tool = key.partition("/")
    if not slash:
        return _check_service(service), None
    return _check_service(service), _check_tool(tool)


_ToolKey = tuple[str, str]


class Grants(Mapping[str, Level]):
    """An immutable mapping of service name to :class:`Level`.

    Per-tool entries sit beside the services; as a mapping it holds services only
    (``dict(grants)``, iteration and ``len`` see no tools). Services that are absent have
    ``Level.NONE``. A tool entry (:attr:`tools`) gives one MCP tool its own level on a service;
    a tool without one has its service's level (:meth:`tool_level`). Entries that change nothing
    are dropped (a service at ``NONE``, a tool at its service's level), so two Grants that allow
    the same things compare equal; a tool entry at ``NONE`` under a granted service is kept: it
    is a denial.

    Built from a mapping (``{"notes": "read", "notes/add_note": "write"}``, the form
    :meth:`to_dict` gives and stores keep), pairs, or a scope string (:meth:`from_scope`).
    """

    __slots__ = ("_levels", "_tools")

    def __init__(
        self, levels: Mapping[str, Level | str | int] | Iterable[tuple[str, Level | str | int]] = ()
    ) -> None:
        items = levels.items() if isinstance(levels, Mapping) else levels
        services: dict[str, Level] = {}
        tools: dict[_ToolKey, Level] = {}
        for key, level in items:
            service, tool = _split_key(key)
            if tool is None:
                services[service] = Level.parse(level)
            else:
                tools[service, tool] = Level.parse(level)
        self._levels, self._tools = _canonical(services, tools)

    @classmethod
    def _made(cls, services: Mapping[str, Level], tools: Mapping[_ToolKey, Level]) -> Grants:
        """Grants from already-checked names and levels, made canonical."""
        grants = cls.__new__(cls)
        grants._levels, grants._tools = _canonical(services, tools)
        return grants

    def __getitem__(self, service: str) -> Level:
        return self._levels[service]

    def __iter__(self) -> Iterator[str]:
        return iter(self._levels)

    def __len__(self) -> int:
        return len(self._levels)

    def __bool__(self) -> bool:
        """Whether these grants allow anything at all (a service or a tool)."""
        return bool(self._levels) or bool(self._tools)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Grants):
            return self._levels == other._levels and self._tools == other._tools
        return NotImplemented

    def __hash__(self) -> int:
        return hash((tuple(self._levels.items()), tuple(self._tools.items())))

    def __repr__(self) -> str:
        inner = ", ".join(f"{key!r}: {label!r}" for key, label in self.to_dict().items())
        return f"Grants({{{inner}}})"

    @property
    def tools(self) -> Mapping[tuple[str, str], Level]:
        """The tool entries: ``{(service, tool): level}``, read-only."""
        return MappingProxyType(self._tools)

    def level(self, service: str) -> Level:
        """The level granted on ``service`` (``NONE`` when absent).

        ``"service/tool"`` gives that tool's level, as :meth:`tool_level` does.
        """
        name, slash, tool = service.partition("/")
        if slash:
            return self.tool_level(name, tool)
        return self._levels.get(service, Level.NONE)

    def tool_level(self, service: str, tool: str) -> Level:
        """The level of MCP tool ``tool`` on ``service``: its own entry, else the service's."""
        found = self._tools.get((service, tool))
        return found if found is not None else self._levels.get(service, Level.NONE)

    def allows(self, service: str, level: Level) -> bool:
        """Whether these grants reach ``level`` on ``service`` (tool entries play no part)."""
        return self._levels.get(service, Level.NONE) >= level

    def allows_tool(self, service: str, tool: str, level: Level) -> bool:
        """Whether these grants reach ``level`` on MCP tool ``tool`` of ``service``."""
        return self.tool_level(service, tool) >= level

    def narrow(self, scope: Grants | None) -> Grants:
        """The minimum of these grants and ``scope``; ``None`` means no narrowing.

        Service by service, and for every tool either side names, tool by tool (each side's tool
        level being its entry or its service's level): for any service and tool, the result's
        :meth:`tool_level` is the smaller of the two sides'. Nothing can widen.
        """
        if scope is None:
            return self
        services = {s: min(level, scope.level(s)) for s, level in self._levels.items()}
        tools = {
            key: min(self.tool_level(*key), scope.tool_level(*key))
            for key in self._tools.keys() | scope._tools.keys()
        }
        return Grants._made(services, tools)

    def with_level(self, service: str, level: Level | str) -> Grants:
        """A copy with ``service`` set to ``level`` (``NONE`` removes it).

        ``"service/tool"`` sets that tool's entry instead (``NONE`` then denies the tool).
        Tool entries stay as they are.
        """
        name, tool = _split_key(service)
        if tool is not None:
            return self.with_tool_level(name, tool, level)
        return Grants._made({**self._levels, name: Level.parse(level)}, self._tools)

    def with_tool_level(self, service: str, tool: str, level: Level | str) -> Grants:
        """A copy where MCP tool ``tool`` of ``service`` has ``level`` whatever the service's."""
        key = (_check_service(service), _check_tool(tool))
        return Grants._made(self._levels, {**self._tools, key: Level.parse(level)})

    def to_scope(self) -> str:
        """The OAuth scope string, e.g. ``"crm:read notes:read notes/add_note:write"``.

        Services in order, each followed by its tool entries; canonical (equal Grants give
        equal strings) and read back by :meth:`from_scope` to equal Grants.
        """
        return " ".join(f"{key}:{label}" for key, label in self.to_dict().items())

    def to_dict(self) -> dict[str, str]:
        """A JSON-friendly ``{"crm": "read", "notes/add_note": "write"}`` form."""
        by_service: dict[str, list[tuple[str, Level]]] = {}
        for (owner, tool), own_level in self._tools.items():  # sorted by (service, tool)
            by_service.setdefault(owner, []).append((tool, own_level))
        out: dict[str, str] = {}
        for service in sorted(self._levels.keys() | by_service.keys()):
            found = self._levels.get(service)
            if found is not None:
                out[service] = found.label
            for tool, tool_level in by_service.get(service, ()):
                out[f"{service}/{tool}"] = tool_level.label
        return out

    @classmethod
    def from_scope(cls, scope: str, *, skip_foreign: bool = False) -> Grants:
        """Parse ``"crm:read notes/add_note:write"``; a repeated name keeps its highest level.

        ``ValueError`` names the first malformed token by its position (never its text, which
        may be anything a client sent). ``skip_foreign=True`` ignores tokens that are not
        agentguard grants (``openid``, ``crm:admin``), for scopes an external authorization
        server issued.
        """
        services: dict[str, Level] = {}
        tools: dict[_ToolKey, Level] = {}
        for position, token in enumerate(scope.split(), start=1):
            try:
                name, tool, level = _parse_token(token)
            except ValueError as error:
                if skip_foreign:
                    continue
                raise ValueError(f"scope token {position}: {error}") from None
            if tool is None:
                services[name] = max(level, services.get(name, Level.NONE))
            else:
                tools[name, tool] = max(level, tools.get((name, tool), Level.NONE))
        return cls._made(services, tools)

    @classmethod
    def _validate(cls, value: Any) -> Grants:
        if isinstance(value, Grants):
            return value
        if isinstance(value, str):
            return cls.from_scope(value)
        if isinstance(value, Mapping):
            return cls(value)
        raise ValueError("grants are a mapping of service to level, or a scope string")

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls._validate,
            serialization=core_schema.plain_serializer_function_ser_schema(lambda g: g.to_dict()),
        )


def _parse_token(token: str) -> tuple[str, str | None, Level]:
    """One scope token: ``(service, tool or None, level)``; ``ValueError`` saying what is wrong."""
    key, colon, level_text = token.partition(":")
    if not colon:
        raise ValueError("a grant is 'service:level' or 'service/tool:level', e.g. 'crm:read'")
    if ":" in level_text:
        raise ValueError("a grant has one ':' (before the level)")
    service, tool = _split_key(key)
    try:
        level = Level.parse(level_text)
    except ValueError:
        raise ValueError("a level is 'none', 'read' or 'write'") from None
    return service, tool, level


def _canonical(
    services: Mapping[str, Level], tools: Mapping[_ToolKey, Level]
) -> tuple[dict[str, Level], dict[_ToolKey, Level]]:
    """Sorted, without services at ``NONE`` or tool entries equal to their service's level."""
    kept: dict[str, Level] = {
        s: level for s, level in sorted(services.items()) if level is not Level.NONE
    }
    own = {
        key: level for key, level in sorted(tools.items()) if level != kept.get(key[0], Level.NONE)
    }
    return kept, own
