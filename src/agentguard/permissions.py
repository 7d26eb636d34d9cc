"""Which permission a request needs, and whether a Principal has it.

Routes declare a service and, by default, derive the level from the method: ``GET``, ``HEAD``
and ``OPTIONS`` read, every other method writes. A rule may fix one level for every method or
override single methods (a search endpoint that uses ``POST`` but only reads). The longest
matching path prefix wins; a path no rule covers is denied, so a forgotten route fails closed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from agentguard.errors import InsufficientScope, Reason
from agentguard.model import SERVICE_NAME_PATTERN, Level, Principal

__all__ = ["READ_METHODS", "PermissionChecker", "Requirement", "RouteRule", "method_level"]

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def method_level(method: str) -> Level:
    """The default level for an HTTP method: read for safe methods, write for the rest."""
    return Level.READ if method.upper() in READ_METHODS else Level.WRITE


@dataclass(frozen=True, slots=True)
class Requirement:
    """What one request needs: ``level`` on ``service`` (``None``: any authenticated key)."""

    service: str | None
    level: Level

    @property
    def scope(self) -> str:
        """The requirement as an OAuth scope token, e.g. ``"crm:write"``."""
        return f"{self.service}:{self.level.label}" if self.service else "authenticated"


@dataclass(frozen=True)
class RouteRule:
    """A permission rule for every path under ``prefix``.

    Args:
        prefix: path prefix matched on whole segments (``"/crm"`` covers ``/crm`` and
            ``/crm/contacts`` but not ``/crmx``). ``"/"`` covers everything.
        service: the service whose grant is needed, or ``None`` for "any valid key".
        level: one level for every method; ``None`` derives it from the method.
        methods: per-method overrides, e.g. ``{"POST": Level.READ}``.
    """

    prefix: str
    service: str | None
    level: Level | str | None = None
    methods: Mapping[str, Level | str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.prefix.startswith("/"):
            raise ValueError("a rule prefix starts with '/'")
        if self.service is not None and not SERVICE_NAME_PATTERN.match(self.service):
            raise ValueError(f"invalid service name in rule for {self.prefix!r}")
        normalised = {m.upper(): Level.parse(lvl) for m, lvl in self.methods.items()}
        object.__setattr__(self, "methods", normalised)
        if self.level is not None:
            object.__setattr__(self, "level", Level.parse(self.level))
        object.__setattr__(self, "prefix", self.prefix.rstrip("/") or "/")

    def covers(self, path: str) -> bool:
        """Whether ``path`` is under this rule's prefix, on a segment boundary."""
        if self.prefix == "/":
            return True
        return path == self.prefix or path.startswith(self.prefix + "/")

    def requirement(self, method: str) -> Requirement:
        """The requirement for ``method`` under this rule."""
        method = method.upper()
        override = self.methods.get(method)
        if override is None:
            override = self.level if self.level is not None else method_level(method)
        return Requirement(self.service, Level.parse(override))


class PermissionChecker:
    """Finds the rule for a request and checks a Principal's live grants against it."""

    def __init__(self, rules: Sequence[RouteRule]) -> None:
        prefixes = [rule.prefix for rule in rules]
        if len(set(prefixes)) != len(prefixes):
            raise ValueError("two rules share one prefix")
        self.rules: tuple[RouteRule, ...] = tuple(
            sorted(rules, key=lambda rule: len(rule.prefix), reverse=True)
        )

    def requirement(self, method: str, path: str) -> Requirement | None:
        """The requirement of the most specific rule covering ``path``; ``None`` if none."""
        for rule in self.rules:
            if rule.covers(path):
                return rule.requirement(method)
        return None

    @staticmethod
    def authorize(principal: Principal, requirement: Requirement | None) -> None:
        """Raise :class:`InsufficientScope` unless ``principal`` meets ``requirement``.

        ``None`` (no rule covers the path) is always refused.
        """
        if requirement is None:
            raise InsufficientScope(reason=Reason.NO_ROUTE_RULE)
        if requirement.service is not None and not principal.allows(
            requirement.service, requirement.level
        ):
            raise InsufficientScope(required=requirement.scope)
