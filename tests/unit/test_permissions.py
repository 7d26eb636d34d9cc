from __future__ import annotations

from datetime import datetime, timezone

import pytest

from agentguard.errors import InsufficientScope, Reason
from agentguard.model import Grants, Level, Principal
from agentguard.permissions import PermissionChecker, Requirement, RouteRule, method_level


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
