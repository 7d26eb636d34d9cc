from __future__ import annotations

import pytest
from pydantic import ValidationError

from agentguard import Level, Placement, Requirement, ServiceConfig, ServiceRoute


def test_fourth_service_is_one_entry() -> None:
    billing = ServiceConfig.model_validate(
        {
            "name": "billing",
            "base_url": "https://billing.example/api",
            "placement": "query",
            "parameter": "token",
        }
    )
    assert billing.placement is Placement.QUERY


@pytest.mark.parametrize(
    "config",
    [
        {"name": "crm", "base_url": "http://crm.example"},
        {"name": "crm", "base_url": "ftp://crm.example"},
        {"name": "crm", "base_url": "https://user:pw@crm.example"},
        {"name": "crm", "base_url": "https://crm.example?x=1"},
        {"name": "CRM", "base_url": "https://crm.example"},
        {"name": "crm", "base_url": "https://crm.example", "placement": "header"},
        {
            "name": "crm",
            "base_url": "https://crm.example",
            "placement": "header",
            "parameter": "Host",
        },
        {
            "name": "crm",
            "base_url": "https://crm.example",
            "placement": "header",
            "parameter": "Authorization",
        },
        {"name": "crm", "base_url": "https://crm.example", "parameter": "X-Key"},
        {"name": "crm", "base_url": "https://crm.example", "surprise": 1},
    ],
)
def test_invalid_services_are_refused(config: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ServiceConfig.model_validate(config)


def test_route_levels_accept_names() -> None:
    service = ServiceConfig.model_validate(
        {
            "name": "crm",
            "base_url": "https://crm.example",
            "routes": [
                {"path": "/search", "methods": {"POST": "read"}},
                {"path": "/admin", "level": "write"},
            ],
        }
    )
    assert service.routes[0].methods == {"POST": Level.READ}
    assert service.routes[1].level is Level.WRITE
    with pytest.raises(ValidationError):
        ServiceConfig.model_validate(
            {"name": "crm", "base_url": "https://crm.example", "routes": [{"level": "admin"}]}
        )


def test_plain_http_needs_explicit_opt_in() -> None:
    service = ServiceConfig(name="crm", base_url="http://127.0.0.1:8080", allow_insecure_http=True)
    assert service.is_loopback


def test_routes_become_requirements() -> None:
    service = ServiceConfig(
        name="crm",
        base_url="https://crm.example",
        routes=(
            ServiceRoute(path="/search", methods={"POST": Level.READ}),
            ServiceRoute(path="/admin", level=Level.WRITE),
        ),
    )
    checker = service.permission_checker()
    assert checker.requirement("POST", "/search") == Requirement("crm", Level.READ)
    assert checker.requirement("GET", "/admin/x") == Requirement("crm", Level.WRITE)
    assert checker.requirement("DELETE", "/contacts/1") == Requirement("crm", Level.WRITE)
    assert checker.requirement("GET", "/contacts") == Requirement("crm", Level.READ)


def test_encoded_slashes_are_refused_unless_a_service_opts_in() -> None:
    plain = ServiceConfig(name="crm", base_url="https://api.crm.example")
    assert plain.allow_encoded_slash is False
    opted = ServiceConfig.model_validate(
        {"name": "files", "base_url": "https://files.example", "allow_encoded_slash": True}
    )
    assert opted.allow_encoded_slash is True
