"""Which permission a request needs, and whether a Principal has it.

Routes declare a service and, by default, derive the level from the method: ``GET``, ``HEAD``
and ``OPTIONS`` read, every other method writes. A rule may fix one level for every method or
override single methods (a search endpoint that uses ``POST`` but only reads). The longest
matching path prefix wins; a path no rule covers is denied, so a forgotten route fails closed.

Letter case: some servers read ``/ADMIN`` as ``/admin``, others do not, and the guard cannot
know which one is behind it. So a path is matched both as sent and case-insensitively, and the
stricter of the two rules applies: ``/crm/ADMIN/users`` needs what ``/crm/admin`` needs. A
reading that finds no rule is ignored; two rules that name different services refuse the
request (no single grant covers both). Every other lenient reading (``;`` parameters, trailing
dots, ``\\``, encoded dots or slashes, non-ASCII look-alikes) never gets here:
:mod:`agentguard.target` refuses such targets before any rule is looked up.
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

    def covers(self, path: str, *, any_case: bool = False) -> bool:
        """Whether ``path`` is under this rule's prefix, on a segment boundary.

        ``any_case`` compares case-insensitively (Unicode case folding).
        """
        if self.prefix == "/":
            return True
        prefix = self.prefix
        if any_case:
            path, prefix = path.casefold(), prefix.casefold()
        return path == prefix or path.startswith(prefix + "/")

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

    def rule_for(self, path: str, *, any_case: bool = False) -> RouteRule | None:
        """The most specific rule covering ``path`` (read exactly as given), or ``None``."""
        for rule in self.rules:
            if rule.covers(path, any_case=any_case):
                return rule
        return None

    def requirement(self, method: str, path: str) -> Requirement | None:
        """The strictest requirement among the case readings of ``path``; ``None`` if none.

        The readings are ``path`` as given and ``path`` compared case-insensitively; each picks
        its most specific rule. ``None`` (refused) when no reading finds a rule or when the two
        rules name different services.
        """
        readings = (self.rule_for(path), self.rule_for(path, any_case=True))
        needed = [rule.requirement(method) for rule in readings if rule is not None]
        services = {need.service for need in needed if need.service is not None}
        if len(services) > 1:
            return None
        strict = [need for need in needed if need.service is not None] or needed
        return max(strict, key=lambda need: need.level, default=None)

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
