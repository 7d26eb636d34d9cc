"""Permission levels and per-service grants, with the narrowing arithmetic.

A user's grants are the ceiling: a key may carry an optional scope that narrows them, and the
effective grants of a request are the per-service minimum of the two. Nothing here can widen.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

__all__ = ["SERVICE_NAME_PATTERN", "Grants", "Level"]

SERVICE_NAME_PATTERN = re.compile(r"[a-z][a-z0-9_-]{0,62}\Z")


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


class Grants(Mapping[str, Level]):
    """An immutable mapping of service name to :class:`Level`.

    Services that are absent have ``Level.NONE``; entries at ``NONE`` are dropped, so two Grants
    that allow the same things compare equal.
    """

    __slots__ = ("_levels",)

    def __init__(
        self, levels: Mapping[str, Level | str | int] | Iterable[tuple[str, Level | str | int]] = ()
    ) -> None:
        items = levels.items() if isinstance(levels, Mapping) else levels
        parsed: dict[str, Level] = {}
        for service, level in items:
            parsed_level = Level.parse(level)
            if parsed_level is not Level.NONE:
                parsed[_check_service(service)] = parsed_level
        self._levels = dict(sorted(parsed.items()))

    def __getitem__(self, service: str) -> Level:
        return self._levels[service]

    def __iter__(self) -> Iterator[str]:
        return iter(self._levels)

    def __len__(self) -> int:
        return len(self._levels)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Grants):
            return self._levels == other._levels
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self._levels.items()))

    def __repr__(self) -> str:
        inner = ", ".join(f"{s!r}: {lvl.label!r}" for s, lvl in self._levels.items())
        return f"Grants({{{inner}}})"

    def level(self, service: str) -> Level:
        """The level granted on ``service`` (``NONE`` when absent)."""
        return self._levels.get(service, Level.NONE)

    def allows(self, service: str, level: Level) -> bool:
        """Whether these grants reach ``level`` on ``service``."""
        return self._levels.get(service, Level.NONE) >= level

    def narrow(self, scope: Grants | None) -> Grants:
        """The per-service minimum of these grants and ``scope``; ``None`` means no narrowing."""
        if scope is None:
            return self
        return Grants(
            (service, min(level, scope.level(service))) for service, level in self._levels.items()
        )

    def with_level(self, service: str, level: Level | str) -> Grants:
        """A copy with ``service`` set to ``level`` (``NONE`` removes it)."""
        changed = dict(self._levels)
        changed[service] = Level.parse(level)
        return Grants(changed)

    def to_scope(self) -> str:
        """The OAuth scope string, e.g. ``"crm:read projects:write"``."""
        return " ".join(f"{s}:{lvl.label}" for s, lvl in self._levels.items())

    def to_dict(self) -> dict[str, str]:
        """A JSON-friendly ``{"crm": "read"}`` form."""
        return {s: lvl.label for s, lvl in self._levels.items()}

    @classmethod
    def from_scope(cls, scope: str) -> Grants:
        """Parse ``"crm:read projects:write"``; a repeated service keeps its highest level."""
        best: dict[str, Level] = {}
        for token in scope.split():
            service, sep, level_text = token.partition(":")
            if not sep:
                raise ValueError("a scope token is 'service:level', e.g. 'crm:read'")
            level = Level.parse(level_text)
            best[_check_service(service)] = max(level, best.get(service, Level.NONE))
        return cls(best)

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
