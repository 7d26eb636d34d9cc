"""PermissionChecker's contract at its edges: exact errors, defaults, and every reading counted.

Each test names the rules, the path and the one outcome the module docstring promises for it.
"""

from __future__ import annotations

import pytest

from agentguard import Level, PermissionChecker, Requirement, RouteRule


def checker(*rules: tuple[str, str | None]) -> PermissionChecker:
    return PermissionChecker([RouteRule(prefix, service) for prefix, service in rules])


def services(check: PermissionChecker, path: str) -> list[str | None]:
    return sorted((rule.service for rule in check.rules_for(path)), key=str)


def test_rule_errors_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match=r"^a rule prefix starts with '/'$"):
        RouteRule("crm", "crm")
    with pytest.raises(ValueError, match=r"^invalid service name in rule for '/crm'$"):
        RouteRule("/crm", "CRM!")
    with pytest.raises(ValueError, match=r"^two rules share one prefix$"):
        checker(("/crm", "crm"), ("/crm/", "crm"))


def test_rule_level_and_methods_are_parsed_into_levels() -> None:
    rule = RouteRule("/search/", "crm", level="read", methods={"post": "write"})
    assert rule.level is Level.READ
    assert rule.methods == {"POST": Level.WRITE}
    assert rule.prefix == "/search"
    assert RouteRule("/inboX//", "crm").prefix == "/inboX"  # only slashes are trimmed
    assert RouteRule("///", None).prefix == "/"


def test_covers_and_rule_for_are_case_sensitive_unless_asked() -> None:
    rule = RouteRule("/admin", "ops")
    assert not rule.covers("/ADMIN/users")
    assert rule.covers("/ADMIN/users", any_case=True)
    check = checker(("/admin", "ops"))
    assert check.rule_for("/ADMIN") is None
    assert check.rule_for("/ADMIN", any_case=True) == rule


def test_rule_for_picks_the_longest_prefix_whatever_the_declared_order() -> None:
    check = checker(("/crm", "crm"), ("/crm/admin", "ops"), ("/", None))
    assert [rule.prefix for rule in check.rules] == ["/crm/admin", "/crm", "/"]
    rule = check.rule_for("/crm/admin/users")
    assert rule is not None and rule.service == "ops"


def test_a_path_outside_the_tree_gets_only_the_root_rule() -> None:
    assert services(checker(("/crm", "crm"), ("/", None)), "*") == [None]
    assert services(checker(("/crm", "crm")), "*") == []


def test_both_suffix_readings_are_collected() -> None:
    # "/admin.json" reads as itself and as "/admin": both rules apply, so two services refuse.
    check = checker(("/admin", "ops"), ("/admin.json", "crm"))
    assert services(check, "/admin.json") == ["crm", "crm", "ops", "ops"]
    assert check.requirement("GET", "/admin.json") is None


def test_readings_that_branch_early_are_all_followed_to_the_end() -> None:
    check = checker(("/admin/x", "ops"), ("/admin.json/x", "crm"))
    assert services(check, "/admin.json/x") == ["crm", "crm", "ops", "ops"]
    assert check.requirement("GET", "/admin.json/x") is None


def test_a_leading_plus_is_read_both_as_sent_and_trimmed() -> None:
    check = checker(("/+x", "crm"))
    assert check.requirement("GET", "/+x") == Requirement("crm", Level.READ)
    assert checker(("/x", "crm")).requirement("GET", "/+x") == Requirement("crm", Level.READ)


def test_only_plus_and_tilde_are_edge_characters() -> None:
    check = checker(("/admin", "ops"))
    assert check.requirement("GET", "/admin~") == Requirement("ops", Level.READ)
    assert check.requirement("GET", "/admin+") == Requirement("ops", Level.READ)
    for path in ("/adminX", "/admin-", "/adminx~"):
        assert check.requirement("GET", path) is None, path


def test_an_empty_segment_matches_only_itself() -> None:
    check = checker(("/a", "crm"), ("/a//b", "ops"))
    assert check.requirement("GET", "/a//b") == Requirement("ops", Level.READ)
    assert check.requirement("GET", "/a/b") == Requirement("crm", Level.READ)


def test_a_segment_that_is_all_suffix_has_no_empty_reading() -> None:
    # ".x" is not "" with format ".x": it reads only as itself, so only "/a/.x" applies.
    check = checker(("/a", "crm"), ("/a/.x", "ops"))
    assert check.requirement("GET", "/a/.x") == Requirement("ops", Level.READ)
    check = checker(("/a", "crm"), ("/a//b", "ops"))
    assert check.requirement("GET", "/a/.x/b") == Requirement("crm", Level.READ)
