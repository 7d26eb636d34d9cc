"""RouteRequirements finds the route Starlette's own router serves: generated apps and paths.

Each generated app has top-level routes, an included router (with a prefix and its own
dependency) and a mounted FastAPI app, in a generated order. Every endpoint answers with its
number; the agentguard dependency is overridden so routing alone decides what answers. The
requirement the source gave for the request must be the one the answering route declares (and
``None`` when nothing answered: 404, 405, a trailing-slash redirect).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, FastAPI, Security
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentguard import Guard, Level, Requirement
from agentguard.asgi._types import ASGIApp, Receive, Scope, Send
from agentguard.integrations.fastapi import AgentGuardSecurity, RouteRequirements, install
from agentguard.storage import MemoryStore

security = AgentGuardSecurity()

#: A route's own declaration: none, any valid key, or read/write on the route's own service.
DECLARATIONS = (None, "any", "read", "write")


@dataclass(frozen=True)
class RouteSpec:
    template: str
    method: str
    declared: str | None


@dataclass(frozen=True)
class AppSpec:
    top: tuple[RouteSpec, ...]
    router_prefix: str
    include_prefix: str
    router_declared: str | None
    router: tuple[RouteSpec, ...]
    mount_path: str
    mounted: tuple[RouteSpec, ...]
    order: tuple[str, ...]


@st.composite
def templates(draw: st.DrawFn) -> str:
    segments = draw(st.lists(st.sampled_from(["a", "b", "{x}", "{n:int}"]), min_size=1, max_size=3))
    named = [s.replace("{x", f"{{x{i}").replace("{n", f"{{n{i}") for i, s in enumerate(segments)]
    return "/" + "/".join(named)


ROUTES = st.lists(
    st.builds(
        RouteSpec,
        templates(),
        st.sampled_from(["GET", "POST"]),
        st.sampled_from(DECLARATIONS),
    ),
    max_size=4,
).map(tuple)

APPS = st.builds(
    AppSpec,
    ROUTES,
    st.sampled_from(["/a", "/r"]),
    st.sampled_from(["", "/v"]),
    st.sampled_from([None, "read"]),
    ROUTES,
    st.sampled_from(["/a", "/m"]),
    ROUTES,
    st.permutations(["top", "router", "mount"]).map(tuple),
)

PATHS = st.tuples(
    st.sampled_from(["GET", "POST"]),
    st.lists(st.sampled_from(["a", "b", "r", "m", "v", "1", "zz"]), max_size=4),
    st.booleans(),
).map(lambda drawn: (drawn[0], "/" + "/".join(drawn[1]) + ("/" if drawn[2] else "")))


def _dependency(declared: str | None, service: str) -> list[Any]:
    if declared is None:
        return []
    if declared == "any":
        return [Security(security)]
    return [security.require(service, declared)]


def _own(declared: str | None, service: str) -> list[Requirement]:
    if declared is None:
        return []
    if declared == "any":
        return [Requirement(None, Level.READ)]
    return [Requirement(service, Level.parse(declared))]


def _expected(declared: Sequence[list[Requirement]]) -> Requirement | None:
    """The strictest of the declarations, the first on ties; ``None`` if nothing declared."""
    needed = [need for group in declared for need in group]
    if not any(declared):
        return None
    named = [need for need in needed if need.service is not None]
    return max(named, key=lambda need: need.level, default=Requirement(None, Level.READ))


def _endpoint(number: int) -> Callable[[], Any]:
    async def endpoint() -> int:
        return number

    return endpoint


class Recorder:
    """Outermost middleware: what the source says for the scope AgentGuardMiddleware would see."""

    def __init__(self, app: ASGIApp, seen: list[Requirement | None]) -> None:
        self.app = app
        self.seen = seen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            source: RouteRequirements = scope["app"].state.agentguard_requirements
            self.seen.append(source(scope))
        await self.app(scope, receive, send)


def build(spec: AppSpec, seen: list[Requirement | None]) -> tuple[FastAPI, dict[int, Any]]:
    guard = Guard(MemoryStore())
    app = FastAPI()
    install(app, guard)
    expected: dict[int, Requirement | None] = {}
    counter = iter(range(1000))

    def add(target: FastAPI | APIRouter, route: RouteSpec, outer: list[Requirement]) -> None:
        number = next(counter)
        service = f"s{number}"
        target.add_api_route(
            route.template,
            _endpoint(number),
            methods=[route.method],
            dependencies=_dependency(route.declared, service),
        )
        groups = (
            [outer, _own(route.declared, service)] if outer else [_own(route.declared, service)]
        )
        expected[number] = _expected(groups)

    for group in spec.order:
        if group == "top":
            for route in spec.top:
                add(app, route, [])
        elif group == "router":
            router = APIRouter(
                prefix=spec.router_prefix,
                dependencies=_dependency(spec.router_declared, "router"),
            )
            for route in spec.router:
                add(router, route, _own(spec.router_declared, "router"))
            app.include_router(router, prefix=spec.include_prefix)
        else:
            sub = FastAPI()
            install(sub, guard)
            sub.dependency_overrides[security] = lambda: None
            for route in spec.mounted:
                add(sub, route, [])
            app.mount(spec.mount_path, sub)
    app.dependency_overrides[security] = lambda: None
    app.add_middleware(Recorder, seen=seen)
    return app, expected


def full_templates(spec: AppSpec) -> list[str]:
    """Every route's template as the outer app sees it (prefixes and mount point added)."""
    router = spec.include_prefix + spec.router_prefix
    return [
        *(route.template for route in spec.top),
        *(router + route.template for route in spec.router),
        *(spec.mount_path + route.template for route in spec.mounted),
    ]


@st.composite
def requests_for(draw: st.DrawFn, spec: AppSpec) -> tuple[str, str]:
    """A request near some route of ``spec`` (its template filled in), or an arbitrary one."""
    templates = full_templates(spec)
    if not templates or draw(st.booleans()):
        return draw(PATHS)
    segments = draw(st.sampled_from(templates)).split("/")
    values = st.sampled_from(["a", "1", "zz"])
    path = "/".join(draw(values) if seg.startswith("{") else seg for seg in segments)
    return draw(st.sampled_from(["GET", "POST"])), path + draw(st.sampled_from(["", "/"]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(APPS, st.data())
def test_the_source_agrees_with_starlettes_routing(spec: AppSpec, data: st.DataObject) -> None:
    seen: list[Requirement | None] = []
    app, expected = build(spec, seen)
    requests = data.draw(st.lists(requests_for(spec), min_size=1, max_size=10))
    with TestClient(app, follow_redirects=False) as client:
        for method, path in requests:
            response = client.request(method, path)
            served = response.json() if response.status_code == 200 else None
            want = None if served is None else expected[served]
            assert seen.pop() == want, (method, path, response.status_code, served)
