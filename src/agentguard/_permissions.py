"""Which permission a request needs, and whether a Principal has it.

Routes declare a service and, by default, derive the level from the method: ``GET``, ``HEAD``
and ``OPTIONS`` read, every other method writes. A rule may fix one level for every method or
override single methods (a search endpoint that uses ``POST`` but only reads). The longest
matching path prefix wins; a path no rule covers is denied, so a forgotten route fails closed.

Readings: servers disagree about which resource a path names, and the guard cannot know which
reading the vendor behind it uses. So a path is matched under every reading below, each picks
its most specific rule, and the stricter of those rules applies:

- letter case: as sent, and case-insensitively (``/ADMIN/users`` needs what ``/admin`` needs);
- format suffixes: a segment ``name.ext`` also as ``name`` (Rails routes ``/admin.json`` and
  ``/admin.a.b`` to ``/admin(.:format)``; Spring MVC's suffix pattern match serves
  ``/admin.csv`` from ``/admin``), cut at any of its dots, in every segment;
- edge characters: ``+`` at either end of a segment read as a space and trimmed, a trailing
  ``~`` dropped (``/admin+``, ``/admin~`` read as ``/admin``), combined with the above.

A reading that finds no rule is ignored; readings whose rules name different services refuse
the request (no single grant covers both). Every other lenient reading (``;`` parameters,
trailing dots, ``\\``, encoded dots or slashes, non-ASCII look-alikes) never gets here:
:mod:`agentguard._target` refuses such targets before any rule is looked up.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from agentguard._model import SERVICE_NAME_PATTERN, Level, Principal
from agentguard.errors import InsufficientScope, Reason

__all__ = [
    "READ_METHODS",
    "WEBSOCKET",
    "PermissionChecker",
    "Requirement",
    "RouteRule",
    "method_level",
    "websocket_requirement",
]

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Worked out once per rule (RouteRule.requirement); any other method is worked out per call.
_STANDARD_METHODS = ("GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE")
_MAX_COST = 2**40  # far above any real cost, far below what every limit store holds exactly


def method_level(method: str) -> Level:
    """The default level for an HTTP method: read for safe methods, write for the rest."""
    return Level.READ if method.upper() in READ_METHODS else Level.WRITE


@dataclass(frozen=True, slots=True)
class Requirement:
    """What one request needs: ``level`` on ``service`` (``None``: any authenticated key).

    ``approval``: the call runs only once a human approved this exact call (see
    :mod:`agentguard.approvals`); ``cost``: what the call charges against budgets;
    ``rule``: the version (a hash of the configuration) of the rule the requirement came from,
    which approvals are bound to (not compared: two rules asking the same are one requirement).
    """

    service: str | None
    level: Level
    approval: bool = False
    cost: int = 1
    rule: str = field(default="", compare=False)

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
        approval: ``True`` holds every call under the rule for a human's approval; a collection
            of methods (``{"DELETE"}``) holds only those.
        cost: what a call charges against budgets: one number, or per method
            (``{"POST": 5}``; methods not named cost 1).
    """

    prefix: str
    service: str | None
    level: Level | str | None = None
    methods: Mapping[str, Level | str] = field(default_factory=dict)
    approval: bool | Collection[str] = False
    cost: int | Mapping[str, int] = 1

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
        if not isinstance(self.approval, bool):
            if isinstance(self.approval, str):
                raise ValueError("approval takes True/False or a collection of methods")
            object.__setattr__(self, "approval", frozenset(m.upper() for m in self.approval))
        costs = self.cost if isinstance(self.cost, Mapping) else {"*": self.cost}
        if any(
            not isinstance(c, int) or isinstance(c, bool) or not 0 <= c <= _MAX_COST
            for c in costs.values()
        ):
            raise ValueError(f"a cost is a whole number, 0 to 2**40 (rule for {self.prefix!r})")
        if isinstance(self.cost, Mapping):
            object.__setattr__(self, "cost", {m.upper(): c for m, c in self.cost.items()})
        object.__setattr__(self, "_version", _version(self))
        # The rule is frozen from here: what each standard method needs is worked out once
        # (a request sending any other method has it worked out on the spot, never stored).
        needs = {method: self._requirement(method) for method in _STANDARD_METHODS}
        object.__setattr__(self, "_requirements", needs)

    @property
    def version(self) -> str:
        """A hash of this rule's configuration; approvals are bound to it, so editing the rule
        voids the approvals given under the old one."""
        return str(self.__dict__["_version"])

    def needs_approval(self, method: str) -> bool:
        """Whether a ``method`` call under this rule waits for a human's approval."""
        approval = self.approval
        return approval if isinstance(approval, bool) else method.upper() in approval

    def cost_of(self, method: str) -> int:
        """What a ``method`` call under this rule charges against budgets."""
        cost = self.cost
        return cost.get(method.upper(), 1) if isinstance(cost, Mapping) else cost

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
        """The requirement for ``method`` under this rule.

        ``HEAD`` needs at least what ``GET`` needs (level, approval, cost): frameworks and
        vendors answer a ``HEAD`` with the ``GET`` handler, which then runs.
        """
        known: Requirement | None = self.__dict__["_requirements"].get(method)
        return known if known is not None else self._requirement(method)

    def _requirement(self, method: str) -> Requirement:
        method = method.upper()
        own = self._plain(method)
        if method != "HEAD":
            return own
        get = self._plain("GET")
        return Requirement(
            self.service,
            max(own.level, get.level),
            own.approval or get.approval,
            max(own.cost, get.cost),
            self.version,
        )

    def _plain(self, method: str) -> Requirement:
        override = self.methods.get(method)
        if override is None:
            override = self.level if self.level is not None else method_level(method)
        return Requirement(
            self.service,
            Level.parse(override),
            self.needs_approval(method),
            self.cost_of(method),
            self.version,
        )


def _version(rule: RouteRule) -> str:
    """The configuration hash behind :attr:`RouteRule.version` (32 hex digits)."""
    approval = rule.approval if isinstance(rule.approval, bool) else sorted(rule.approval)
    cost = rule.cost if not isinstance(rule.cost, Mapping) else sorted(rule.cost.items())
    level = rule.level.label if isinstance(rule.level, Level) else rule.level
    methods = sorted((m, Level.parse(v).label) for m, v in rule.methods.items())
    config = [rule.prefix, rule.service, level, methods, approval, cost]
    text = json.dumps(config, separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _combined(versions: Iterable[str]) -> str:
    unique = sorted(set(versions))
    if len(unique) == 1:
        return unique[0]
    return hashlib.sha256(",".join(unique).encode()).hexdigest()[:32]


def _ends(segment: str) -> list[int]:
    """Where a lenient reading of ``segment`` may end: before a ``.``, or before a run of
    ``+``/``~`` that reaches the end or a ``.`` (everything after is a format suffix or edge)."""
    ends = []
    lenient = True  # what follows (nothing, at first) can be dropped
    for index in range(len(segment), -1, -1):
        if index < len(segment):
            char = segment[index]
            if char == ".":
                lenient = True
            elif char not in "+~":
                lenient = False
        if lenient:
            ends.append(index)
    return ends


def _starts(segment: str) -> tuple[int, ...]:
    """Where a lenient reading of ``segment`` may start: at 0, or after its leading ``+``."""
    lead = len(segment) - len(segment.lstrip("+"))
    return (0, lead) if lead else (0,)


class _Node:
    """A rule-prefix trie node: children by segment, and the rules ending here."""

    __slots__ = ("children", "rules")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.rules: list[RouteRule] = []

    @classmethod
    def build(cls, rules: Iterable[RouteRule], *, fold: bool) -> _Node:
        root = cls()
        for rule in rules:
            node = root
            for segment in _segments(rule.prefix.casefold() if fold else rule.prefix):
                node = node.children.setdefault(segment, cls())
            node.rules.append(rule)
        return root

    def next(self, segment: str) -> tuple[list[_Node], bool]:
        """The children some reading of ``segment`` leads to, and whether some reading leads
        to none of them (the path leaves the trie here)."""
        if not segment:  # an empty segment (a trailing slash) reads only as itself
            child = self.children.get(segment)
            return ([], True) if child is None else ([child], False)
        starts, ends = _starts(segment), _ends(segment)
        total = sum(1 for start in starts for end in ends if end > start)
        found: list[_Node] = []
        if total <= len(self.children):
            for start in starts:
                for end in ends:
                    child = self.children.get(segment[start:end]) if end > start else None
                    if child is not None:
                        found.append(child)
        else:  # a long segment with many readings: test each child instead
            valid = set(ends)
            for key, child in self.children.items():
                if any(
                    start + len(key) in valid and segment.startswith(key, start)
                    for start in starts
                    if key
                ):
                    found.append(child)
        return found, len(found) < total


def _segments(path: str) -> list[str]:
    return path[1:].split("/") if path not in ("", "/") else []


def _readings(root: _Node, segments: list[str]) -> list[RouteRule]:
    """The most specific rule of each reading of ``segments`` (a depth-first walk over every
    child some reading of each segment leads to)."""
    found: list[RouteRule] = []
    stack: list[tuple[_Node, int, list[RouteRule]]] = [(root, 0, [])]
    while stack:
        node, depth, deepest = stack.pop()
        deepest = node.rules or deepest
        if depth == len(segments):
            found += deepest
            continue
        children, leaves = node.next(segments[depth])
        if leaves:
            found += deepest
        stack += [(child, depth + 1, deepest) for child in children]
    return found


def _walk(root: _Node, segments: list[str]) -> list[RouteRule]:
    """The most specific rules along ``segments`` when each segment has one reading only (no
    ``.``, ``+`` or ``~`` in it): what :func:`_readings` finds for them, without its stack."""
    node, deepest = root, root.rules
    for segment in segments:
        child = node.children.get(segment)
        if child is None:
            break
        node = child
        deepest = node.rules or deepest
    return deepest


class PermissionChecker:
    """Finds the rule for a request and checks a Principal's live grants against it."""

    def __init__(self, rules: Sequence[RouteRule]) -> None:
        prefixes = [rule.prefix for rule in rules]
        if len(set(prefixes)) != len(prefixes):
            raise ValueError("two rules share one prefix")
        self.rules: tuple[RouteRule, ...] = tuple(
            sorted(rules, key=lambda rule: len(rule.prefix), reverse=True)
        )
        self._exact = _Node.build(self.rules, fold=False)
        self._folded = _Node.build(self.rules, fold=True)

    def rule_for(self, path: str, *, any_case: bool = False) -> RouteRule | None:
        """The most specific rule covering ``path`` (read exactly as given), or ``None``."""
        for rule in self.rules:
            if rule.covers(path, any_case=any_case):
                return rule
        return None

    def rules_for(self, path: str) -> list[RouteRule]:
        """The most specific rule of each reading of ``path`` (see the module docstring)."""
        if not path.startswith("/"):  # only "/" covers a path outside the tree ("*")
            return [rule for rule in self.rules if rule.prefix == "/"]
        found: list[RouteRule] = []
        for root, text in ((self._exact, path), (self._folded, path.casefold())):
            segments = _segments(text)
            if "." in text or "+" in text or "~" in text:
                found += _readings(root, segments)
            else:  # one reading per segment: a plain walk finds what _readings would
                found += _walk(root, segments)
        return found

    def requirement(self, method: str, path: str) -> Requirement | None:
        """The strictest requirement among the readings of ``path``; ``None`` if none.

        Each reading (see the module docstring) picks its most specific rule. ``None``
        (refused) when no reading finds a rule or when their rules name different services.
        """
        found = self.rules_for(path)
        if found and all(rule is found[0] for rule in found):  # one rule (the usual case)
            return found[0].requirement(method)
        rules = {id(rule): rule for rule in found}.values()
        needed = [rule.requirement(method) for rule in rules]
        services = {need.service for need in needed if need.service is not None}
        if len(services) > 1:
            return None
        strict = [need for need in needed if need.service is not None] or needed
        chosen = max(strict, key=lambda need: need.level, default=None)
        if chosen is None or len(strict) == 1:
            return chosen
        # Readings that disagree: every gate of any of them applies (fail closed), and the
        # version names the whole set of rules, so editing any of them voids an approval.
        return Requirement(
            chosen.service,
            chosen.level,
            any(need.approval for need in strict),
            max(need.cost for need in strict),
            _combined(need.rule for need in strict),
        )

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


#: The pseudo-method a route's ``methods``, ``approval`` and ``cost`` name websockets by.
WEBSOCKET = "WEBSOCKET"


def websocket_requirement(checker: PermissionChecker, path: str) -> Requirement | None:
    """What a websocket to ``path`` needs: the stricter of a ``GET`` and a ``WEBSOCKET``.

    The level is write unless the path's rule fixes a level or names ``WEBSOCKET`` in its
    ``methods``; an approval or cost on either method applies. ``None`` (refused): no rule.
    """
    get, socket = checker.requirement("GET", path), checker.requirement(WEBSOCKET, path)
    if get is None or socket is None:
        return None
    return Requirement(
        socket.service,
        max(get.level, socket.level),
        get.approval or socket.approval,
        max(get.cost, socket.cost),
        socket.rule,
    )
