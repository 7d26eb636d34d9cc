from __future__ import annotations

from datetime import datetime, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentguard import Grants, Level, Principal
from agentguard._permissions import (
    PermissionChecker,
    Requirement,
    RouteRule,
    _readings,
    _segments,
    _walk,
    method_level,
)
from agentguard.errors import InsufficientScope, Reason
from tests.support.path_readings import READINGS, rule_for


def principal(scope: str) -> Principal:
    return Principal(
        user_id="u1",
        workspace_id="w1",
        account_id="a1",
        key_id="key_1",
        family_id="fam_1",
        grants=Grants.from_scope(scope),
        expires_at=datetime(2030, 1, 1, tzinfo=timezone.utc),
    )


@pytest.mark.parametrize(
    ("method", "level"),
    [
        ("GET", Level.READ),
        ("head", Level.READ),
        ("OPTIONS", Level.READ),
        ("POST", Level.WRITE),
        ("PUT", Level.WRITE),
        ("PATCH", Level.WRITE),
        ("DELETE", Level.WRITE),
        ("PROPFIND", Level.WRITE),
    ],
)
def test_method_defaults(method: str, level: Level) -> None:
    assert method_level(method) is level


def test_prefix_matches_whole_segments() -> None:
    rule = RouteRule("/crm/", service="crm")
    assert rule.prefix == "/crm"
    assert rule.covers("/crm") and rule.covers("/crm/contacts")
    assert not rule.covers("/crmx") and not rule.covers("/")


def test_longest_prefix_wins() -> None:
    checker = PermissionChecker([RouteRule("/", service="app"), RouteRule("/crm", service="crm")])
    assert checker.requirement("GET", "/crm/x") == Requirement("crm", Level.READ)
    assert checker.requirement("POST", "/other") == Requirement("app", Level.WRITE)


def test_per_method_override_and_fixed_level() -> None:
    search = RouteRule("/crm/search", service="crm", methods={"post": Level.READ})
    admin = RouteRule("/crm/admin", service="crm", level=Level.WRITE)
    checker = PermissionChecker([search, admin, RouteRule("/crm", service="crm")])
    assert checker.requirement("POST", "/crm/search") == Requirement("crm", Level.READ)
    assert checker.requirement("GET", "/crm/admin/x") == Requirement("crm", Level.WRITE)


def test_none_override_means_any_key_for_that_method() -> None:
    rule = RouteRule("/crm", service="crm", methods={"OPTIONS": Level.NONE})
    assert rule.requirement("OPTIONS") == Requirement("crm", Level.NONE)
    PermissionChecker.authorize(principal(""), rule.requirement("OPTIONS"))


def test_read_grant_allows_get_refuses_post() -> None:
    checker = PermissionChecker([RouteRule("/crm", service="crm")])
    who = principal("crm:read")
    checker.authorize(who, checker.requirement("GET", "/crm/contacts"))
    with pytest.raises(InsufficientScope) as info:
        checker.authorize(who, checker.requirement("POST", "/crm/contacts"))
    assert info.value.required == "crm:write"


def test_uncovered_path_is_denied() -> None:
    checker = PermissionChecker([RouteRule("/crm", service="crm")])
    with pytest.raises(InsufficientScope) as info:
        checker.authorize(principal("crm:write"), checker.requirement("GET", "/projects"))
    assert info.value.reason is Reason.NO_ROUTE_RULE


def test_authentication_only_rule() -> None:
    checker = PermissionChecker([RouteRule("/me", service=None)])
    checker.authorize(principal(""), checker.requirement("DELETE", "/me"))


def test_rule_validation() -> None:
    with pytest.raises(ValueError):
        RouteRule("crm", service="crm")
    with pytest.raises(ValueError):
        RouteRule("/crm", service="CRM")
    with pytest.raises(ValueError):
        PermissionChecker([RouteRule("/crm", service="crm"), RouteRule("/crm/", service="x")])


def test_a_case_variant_of_a_stricter_rule_needs_its_level() -> None:
    checker = PermissionChecker(
        [
            RouteRule("/", service="crm", level="read"),
            RouteRule("/admin", service="crm", level="write"),
        ]
    )
    for path in ("/admin/users", "/ADMIN/users", "/Admin", "/aDmIn/x/y"):
        assert checker.requirement("GET", path) == Requirement("crm", Level.WRITE), path
    assert checker.requirement("GET", "/administrators") == Requirement("crm", Level.READ)


def test_the_stricter_of_exact_and_case_insensitive_rules_applies() -> None:
    checker = PermissionChecker(
        [
            RouteRule("/admin", service="crm", level="write"),
            RouteRule("/admin/Public", service="crm", level="read"),
        ]
    )
    assert checker.requirement("GET", "/admin/Public/x") == Requirement("crm", Level.READ)
    # A case-sensitive vendor reads '/admin/public' as under '/admin' (write): stricter wins.
    assert checker.requirement("GET", "/admin/public/x") == Requirement("crm", Level.WRITE)


def test_case_readings_naming_two_services_are_refused() -> None:
    checker = PermissionChecker([RouteRule("/", service="app"), RouteRule("/crm", service="crm")])
    assert checker.requirement("GET", "/crm/x") == Requirement("crm", Level.READ)
    assert checker.requirement("GET", "/CRM/x") is None  # app or crm: no single grant covers it
    authenticated = PermissionChecker([RouteRule("/", service=None), RouteRule("/crm", "crm")])
    assert authenticated.requirement("GET", "/CRM/x") == Requirement("crm", Level.READ)


PREFIXES = st.lists(
    st.text("abAB/", min_size=1, max_size=6).map(lambda text: "/" + text.strip("/")),
    min_size=1,
    max_size=5,
    unique_by=str.casefold,
)


def _checker(table: dict[str, Level]) -> PermissionChecker:
    return PermissionChecker([RouteRule(p, service="crm", level=lvl) for p, lvl in table.items()])


def _case_readings(path: str) -> set[str]:
    """How a vendor may read ``path``: as sent, or folded (a case-insensitive router; rules in
    lower case). Upper-casing a path is no vendor's reading: ``/A`` is not what ``/a`` names."""
    return {path, path.lower(), path.casefold()}


@given(
    prefixes=PREFIXES,
    levels=st.lists(st.sampled_from([Level.READ, Level.WRITE]), min_size=5, max_size=5),
    path=st.text("abAB/", max_size=10).map(lambda text: "/" + text),
)
def test_no_case_reading_finds_a_stricter_rule(
    prefixes: list[str], levels: list[Level], path: str
) -> None:
    """Rules written in lower case: every case reading, matched exactly, is covered."""
    table = dict(zip([p.lower() for p in prefixes], levels, strict=False))
    needed = _checker(table).requirement("GET", path)
    for reading in _case_readings(path):
        found = rule_for(reading, list(table))
        if found is not None:
            assert needed is not None and needed.level >= table[found], (path, reading, table)


@given(
    prefixes=PREFIXES,
    levels=st.lists(st.sampled_from([Level.READ, Level.WRITE]), min_size=5, max_size=5),
    path=st.text("abAB/", max_size=10).map(lambda text: "/" + text),
)
def test_mixed_case_rules_take_the_stricter_of_exact_and_folded(
    prefixes: list[str], levels: list[Level], path: str
) -> None:
    """Rules in any case: the path as sent (exact) and its case class (folded) are covered."""
    table = dict(zip(prefixes, levels, strict=False))
    needed = _checker(table).requirement("GET", path)
    folded = {prefix.casefold(): prefix for prefix in table}
    for reading in _case_readings(path):
        found = rule_for(reading.casefold(), list(folded))
        if found is not None:
            assert needed is not None and needed.level >= table[folded[found]], (path, table)
    exact = rule_for(path, list(table))
    if exact is not None:
        assert needed is not None and needed.level >= table[exact]


# --- format suffixes and edge characters (issue 14 item 3) ------------------------------------

SUFFIX_READINGS = ("format", "suffix", "plus-space", "tilde", "casefold")


def _vendor_readings(path: str, rounds: int = 3) -> set[str]:
    """``path`` under the oracle's suffix, edge and case readings, composed up to ``rounds``."""
    found = {path}
    for _ in range(rounds):
        found |= {READINGS[name](p) for p in found for name in SUFFIX_READINGS}
    return found


SUFFIX_PREFIXES = st.lists(
    st.text("ab.", min_size=1, max_size=4)
    .filter(lambda t: not t.startswith(".") and not t.endswith("."))
    .flatmap(lambda head: st.sampled_from(["/" + head, "/" + head + "/b", "/a/" + head])),
    min_size=1,
    max_size=5,
    unique=True,
)
SUFFIX_PATHS = st.lists(st.text("abAB.+~", min_size=1, max_size=6), min_size=1, max_size=3).map(
    lambda segments: "/" + "/".join(segments)
) | st.sampled_from(["/admin.json", "/Admin.JSON/", "/admin+", "/admin~", "/+admin.a.b~"])


@given(
    prefixes=SUFFIX_PREFIXES,
    levels=st.lists(st.sampled_from([Level.READ, Level.WRITE]), min_size=5, max_size=5),
    path=SUFFIX_PATHS,
    trailing=st.booleans(),
)
def test_no_suffix_or_edge_reading_finds_a_stricter_rule(
    prefixes: list[str], levels: list[Level], path: str, trailing: bool
) -> None:
    """Every reading of the oracle (Rails, Spring, ``+``, ``~``, case, composed) is covered."""
    table = dict(zip(["/", "/admin", *prefixes], [Level.READ, Level.WRITE, *levels], strict=False))
    path = path + "/" if trailing else path
    needed = _checker(table).requirement("GET", path)
    for reading in _vendor_readings(path):
        found = rule_for(reading, list(table))
        assert found is not None
        assert needed is not None and needed.level >= table[found], (path, reading, table)


@given(
    prefixes=PREFIXES,
    levels=st.lists(st.sampled_from([Level.READ, Level.WRITE]), min_size=5, max_size=5),
    path=st.text("abAB/", max_size=10).map(lambda text: "/" + text),
)
def test_a_path_without_suffix_or_edge_characters_needs_no_more_than_before(
    prefixes: list[str], levels: list[Level], path: str
) -> None:
    """The new readings only add strictness where a path has ``.``, ``+`` or ``~``: otherwise
    the requirement is the stricter of the exact and case-insensitive rules, as before."""
    checker = _checker(dict(zip(prefixes, levels, strict=False)))
    before = [checker.rule_for(path), checker.rule_for(path, any_case=True)]
    levels_before = [rule.requirement("GET").level for rule in before if rule is not None]
    needed = checker.requirement("GET", path)
    assert (needed.level if needed else None) == max(levels_before, default=None)


def test_format_suffixes_and_edges_of_a_stricter_rule_need_its_level() -> None:
    checker = _checker({"/": Level.READ, "/admin": Level.WRITE, "/contacts/export": Level.WRITE})
    stricter = [
        "/admin.json", "/admin.xml", "/Admin.JSON", "/admin.a.b", "/admin.json/", "/admin+",
        "/admin~", "/+admin", "/admin.json~", "/admin+.json", "/contacts/export.csv",
        "/contacts/EXPORT.csv/", "/admin.json/users", "/admin.+",
    ]  # fmt: skip
    for path in stricter:
        assert checker.requirement("GET", path) == Requirement("crm", Level.WRITE), path
    for path in ("/contacts/export-history.csv", "/tags/c++", "/~admin", "/a.admin", "/.admin"):
        assert checker.requirement("GET", path) == Requirement("crm", Level.READ), path


def test_a_deeper_read_rule_still_wins_over_its_write_parent() -> None:
    checker = _checker({"/admin": Level.WRITE, "/admin/public": Level.READ})
    assert checker.requirement("GET", "/admin/public/x.json") == Requirement("crm", Level.READ)
    assert checker.requirement("GET", "/admin/public.json") == Requirement("crm", Level.WRITE)


def test_long_segments_with_many_readings_stay_cheap() -> None:
    rules = {f"/r{i}": Level.READ for i in range(3)} | {"/admin": Level.WRITE}
    checker = _checker(rules)
    hostile = "/admin" + "+~." * 3000
    assert checker.requirement("GET", hostile) == Requirement("crm", Level.WRITE)
    assert checker.requirement("GET", "/r1" + "+" * 5000) == Requirement("crm", Level.READ)


# --- the plain walk for paths with one reading per segment (issue 17) -------------------------

WALK_PREFIXES = st.lists(
    st.lists(st.text("abAB.+~\u0130", max_size=3), max_size=3).map(lambda s: "/" + "/".join(s)),
    min_size=1,
    max_size=6,
    unique_by=lambda prefix: prefix.rstrip("/") or "/",
)
WALK_PATHS = st.lists(st.text("abAB\u0130\u00df", max_size=3), max_size=4).map(
    lambda segments: "/" + "/".join(segments)
)


@given(prefixes=WALK_PREFIXES, path=WALK_PATHS)
def test_the_plain_walk_finds_what_every_reading_finds_for_a_path_without_suffix_characters(
    prefixes: list[str], path: str
) -> None:
    """A differential check of the fast path: for a path whose segments hold no ``.``, ``+``
    or ``~`` (each has one reading), the stackless walk and the general walk over every
    reading find the same rules, in the exact and the case-folded tries alike."""
    checker = PermissionChecker([RouteRule(p, service="crm") for p in prefixes])
    for root, text in ((checker._exact, path), (checker._folded, path.casefold())):
        assert "." not in text and "+" not in text and "~" not in text
        segments = _segments(text)
        assert _walk(root, segments) == _readings(root, segments), (prefixes, text)


@given(prefixes=WALK_PREFIXES, path=WALK_PATHS, method=st.sampled_from(["GET", "POST"]))
def test_one_rule_found_gives_that_rules_requirement(
    prefixes: list[str], path: str, method: str
) -> None:
    """The shortcut of ``requirement`` when every reading found the same rule."""
    checker = PermissionChecker(
        [RouteRule(p, service="crm", cost=n + 1) for n, p in enumerate(prefixes)]
    )
    found = checker.rules_for(path)
    needed = checker.requirement(method, path)
    if not found:
        assert needed is None
    elif len({id(rule) for rule in found}) == 1:
        assert needed == found[0].requirement(method)


METHODS = st.sampled_from(["GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"])
ANY_METHOD = METHODS | st.sampled_from(["get", "Head", "PROPFIND", "OVERRIDE", "*"])
LEVELS = st.none() | st.sampled_from([Level.READ, Level.WRITE, "read", "write"])


@given(
    level=LEVELS,
    methods=st.dictionaries(ANY_METHOD, st.sampled_from([Level.READ, Level.WRITE]), max_size=4),
    approval=st.booleans() | st.frozensets(ANY_METHOD, max_size=3),
    cost=st.integers(0, 50) | st.dictionaries(ANY_METHOD, st.integers(0, 50), max_size=3),
    method=ANY_METHOD,
)
def test_what_a_rule_worked_out_once_is_what_it_works_out_per_call(
    level: Level | str | None,
    methods: dict[str, Level],
    approval: bool | frozenset[str],
    cost: int | dict[str, int],
    method: str,
) -> None:
    """A rule works out what each standard method needs when it is made; that must be
    exactly (the rule's version included, which equality leaves out) what it works out for
    the method on the spot, for every method, in any case."""
    rule = RouteRule("/crm", "crm", level=level, methods=methods, approval=approval, cost=cost)
    stored, fresh = rule.requirement(method), rule._requirement(method)
    assert stored == fresh
    assert (stored.rule, stored.approval, stored.cost) == (fresh.rule, fresh.approval, fresh.cost)
    assert stored.rule == rule.version


def test_a_rule_stores_requirements_for_the_standard_methods_only() -> None:
    rule = RouteRule("/crm", "crm")
    for _ in range(3):
        rule.requirement("PROPFIND")
        rule.requirement("get")
    assert sorted(rule.__dict__["_requirements"]) == sorted(
        ["GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"]
    )
    assert rule.requirement("GET") is rule.requirement("GET")
    assert rule.requirement("PROPFIND").level is Level.WRITE
