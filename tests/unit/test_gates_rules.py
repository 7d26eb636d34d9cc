"""Route rules that hold calls for approval and assign costs; budgets and rate limits."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentguard import RouteRule
from agentguard._permissions import PermissionChecker
from agentguard._services import ServiceConfig, ServiceRoute
from agentguard.errors import UsageError
from agentguard.limits import Budget, LimitScope, RateLimit
from agentguard.limits._step import window_of


def test_approval_per_method_and_cost_per_method() -> None:
    rule = RouteRule("/crm/deals", "crm", approval={"delete"}, cost={"post": 5})
    delete, post, get = (rule.requirement(m) for m in ("DELETE", "POST", "GET"))
    assert (delete.approval, delete.cost) == (True, 1)
    assert (post.approval, post.cost) == (False, 5)
    assert (get.approval, get.cost) == (False, 1)
    assert delete.rule == post.rule == rule.version


def test_approval_true_holds_every_method() -> None:
    rule = RouteRule("/crm", "crm", approval=True)
    assert all(rule.requirement(m).approval for m in ("GET", "POST", "PATCH", "OPTIONS"))


@pytest.mark.parametrize(
    "change",
    [
        {"level": "write"},
        {"methods": {"POST": "read"}},
        {"approval": True},
        {"approval": {"POST"}},
        {"cost": 2},
        {"cost": {"POST": 3}},
        {"service": "billing"},
    ],
)
def test_every_configuration_change_changes_the_version(change: dict[str, object]) -> None:
    base = RouteRule("/crm", "crm")
    fields: dict[str, object] = {"prefix": "/crm", "service": "crm", **change}
    assert RouteRule(**fields).version != base.version  # type: ignore[arg-type]


def test_equal_configurations_share_a_version() -> None:
    one = RouteRule("/crm/", "crm", approval=["post", "DELETE"], cost={"post": 2})
    two = RouteRule("/crm", "crm", approval={"DELETE", "POST"}, cost={"POST": 2})
    assert one.version == two.version


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2"])
def test_a_cost_is_a_whole_number(bad: object) -> None:
    with pytest.raises(ValueError, match="cost"):
        RouteRule("/crm", "crm", cost=bad)  # type: ignore[arg-type]


def test_approval_as_a_string_is_refused() -> None:
    with pytest.raises(ValueError, match="approval"):
        RouteRule("/crm", "crm", approval="POST")


def test_readings_that_disagree_take_every_gate() -> None:
    """``/crm/DEALS`` reads as ``/crm`` (exact) and ``/crm/deals`` (any case): the approval
    and the higher cost of either apply, and the version names both rules."""
    held = RouteRule("/crm/deals", "crm", approval=True, cost=1)
    costly = RouteRule("/crm", "crm", cost=7)
    checker = PermissionChecker([held, costly])
    need = checker.requirement("POST", "/crm/DEALS")
    assert need is not None
    assert need.approval and need.cost == 7
    assert need.rule not in (held.version, costly.version)
    only = checker.requirement("POST", "/crm/deals")
    assert only is not None and only.rule == held.version


def test_service_routes_carry_approval_and_cost() -> None:
    service = ServiceConfig(
        name="crm",
        base_url="https://crm.example",
        routes=(ServiceRoute(path="/deals", approval=("DELETE",), cost={"POST": 4}),),
    )
    checker = service.permission_checker()
    delete = checker.requirement("DELETE", "/deals/1")
    post = checker.requirement("POST", "/deals")
    other = checker.requirement("DELETE", "/contacts/1")
    assert delete is not None and delete.approval
    assert post is not None and post.cost == 4 and not post.approval
    assert other is not None and not other.approval


@pytest.mark.parametrize(
    "make",
    [
        lambda: Budget("bad name", 1, timedelta(days=1)),
        lambda: Budget("b", -1, timedelta(days=1)),
        lambda: Budget("b", 1, timedelta(milliseconds=1500)),
        lambda: Budget("b", 1, timedelta(0)),
        lambda: Budget("b", 1, timedelta(days=1), service="Not A Service"),
        lambda: RateLimit("r", 0),
        lambda: RateLimit("r", 1, burst=0),
        lambda: RateLimit("r", 1, period=timedelta(0)),
        lambda: RateLimit("r", 10_000_000),
    ],
)
def test_bad_limits_are_refused_at_construction(make: object) -> None:
    with pytest.raises(UsageError):
        make()  # type: ignore[operator]


def test_rate_limit_defaults() -> None:
    limit = RateLimit("r", 10)
    assert limit.burst == 10 and limit.interval == pytest.approx(0.1)
    assert RateLimit("slow", 0.5).burst == 1
    assert limit.per is LimitScope.KEY_FAMILY
    assert Budget("b", 1, timedelta(days=1), per="account").per is LimitScope.ACCOUNT  # type: ignore[arg-type]


@given(
    st.datetimes(
        min_value=datetime(1971, 1, 1),
        max_value=datetime(2200, 1, 1),
        timezones=st.just(timezone.utc),
    ),
    st.integers(min_value=1, max_value=400 * 86400),
)
def test_windows_are_epoch_aligned_and_hold_now(now: datetime, seconds: int) -> None:
    window = timedelta(seconds=seconds)
    index, ends = window_of(now, window)
    starts = ends - window
    assert starts <= now < ends
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    assert (starts - epoch) % window == timedelta(0)
    assert (starts - epoch) // window == index
