"""Every storage method failing, in turn, under every request the gateway serves: never a 500.

A :class:`~agentguard.testing._faults.FaultyStore` makes one method of one storage Protocol
raise (each kind of exception a backend raises when it is down, and a programming error) while
an agent sends bearer or DPoP requests through the whole gateway app. Each request whose
storage call failed must be a ``503 temporarily_unavailable`` with ``Retry-After``, on record in
the audit log unless the audit store is what failed; each request that did not touch the
failing method must be answered as if nothing were wrong; ``/readyz`` must name the store that
is down; and once the store heals, everything works again without a restart.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentguard.storage import MemoryStore
from agentguard.testing._faults import STORAGE_METHODS, FaultyStore
from tests.product.faults import (
    ERRORS,
    METHODS,
    PROBES,
    READY_ROLES,
    SCHEMES,
    World,
    build_world,
    check_refusal,
)

pytestmark = pytest.mark.anyio

#: Methods no request of the gateway calls (the operator CLI and start-up do); filled in as
#: the matrix runs, and checked by the last test.
_on_the_path: dict[str, set[str]] = {}
_checked: Counter[str] = Counter()  # requests sent with a fault set: "refused" or "untouched"


async def _send(world: World, client: httpx.AsyncClient, probe: str) -> httpx.Response:
    request = PROBES[probe](world)
    return await client.send(request)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize(("protocol", "method"), METHODS, ids=[f"{p}.{m}" for p, m in METHODS])
async def test_a_failing_storage_method_is_503_never_500(
    protocol: str, method: str, scheme: str
) -> None:
    world = await build_world(scheme)
    transport = httpx.ASGITransport(app=world.gateway.app)  # an app exception fails the test
    async with httpx.AsyncClient(transport=transport) as client:
        baseline = {probe: (await _send(world, client, probe)).status_code for probe in PROBES}
        assert baseline == dict.fromkeys(PROBES, 200), baseline
        await world.renew()
        for kind, error in ERRORS.items():
            world.store.fail(method, error)
            for probe in PROBES:
                before = world.store.injected[method]
                response = await _send(world, client, probe)
                assert response.status_code != 500, (kind, probe, response.text)
                if world.store.injected[method] > before:
                    _on_the_path.setdefault(method, set()).add(f"{scheme} {probe}")
                    _checked["refused"] += 1
                    events = await world.events(response.headers["x-request-id"])
                    check_refusal(world, method, probe, response, events)
                else:  # not on this request's path: answered as if nothing were wrong
                    _checked["untouched"] += 1
                    assert response.status_code == 200, (kind, probe, response.text)
            world.store.heal()
            await world.renew()
            recovered = await _send(world, client, "proxy")
            assert recovered.status_code == 200, (kind, recovered.text)
    await world.gateway.aclose()


async def test_the_whole_store_down_is_503_everywhere_and_not_ready() -> None:
    for scheme in SCHEMES:
        world = await build_world(scheme)
        transport = httpx.ASGITransport(app=world.gateway.app)
        async with httpx.AsyncClient(transport=transport) as client:
            world.store.fail_all(ERRORS["OSError"])
            for probe in PROBES:
                response = await _send(world, client, probe)
                assert response.status_code == 503, (scheme, probe, response.text)
            ready = (await _send(world, client, "readyz")).json()
            assert set(ready["unavailable"]) == set(READY_ROLES.values()), ready
            assert ready["reason"] == "ConnectionResetError", ready
            world.store.heal()
            await world.renew()
            assert (await _send(world, client, "proxy")).status_code == 200
            assert (await _send(world, client, "readyz")).json() == {"status": "ready"}
        await world.gateway.aclose()


@pytest.fixture(params=SCHEMES)
async def served(request: pytest.FixtureRequest) -> AsyncIterator[tuple[World, httpx.AsyncClient]]:
    world = await build_world(request.param)
    transport = httpx.ASGITransport(app=world.gateway.app)
    async with httpx.AsyncClient(transport=transport) as client:
        yield world, client
    await world.gateway.aclose()


_STEP = st.tuples(
    st.sampled_from([name for _, name in METHODS]),
    st.sampled_from(sorted(ERRORS)),
    st.one_of(st.none(), st.integers(1, 3)),
    st.sampled_from(sorted(PROBES)),
)


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(schedule=st.lists(_STEP, min_size=1, max_size=6))
async def test_random_fault_schedules_only_ever_show_as_503(
    served: tuple[World, httpx.AsyncClient], schedule: list[tuple[str, str, int | None, str]]
) -> None:
    """Several faults at once, each for a few calls or until healed, in any order: a request
    that met one is a 503 with a clear body; no request is ever a 500."""
    world, client = served
    try:
        for method, kind, times, probe in schedule:
            world.store.fail(method, ERRORS[kind], times=times)
            before = sum(world.store.injected.values())
            response = await _send(world, client, probe)
            assert response.status_code != 500, (schedule, response.text)
            if sum(world.store.injected.values()) > before:
                assert response.status_code == 503, (schedule, response.text)
                if probe != "readyz":
                    assert response.json()["error"] == "temporarily_unavailable"
                    assert response.headers["retry-after"] == "1"
    finally:
        world.store.heal()
        await world.renew()


def test_the_matrix_covered_every_protocol_and_the_request_path() -> None:
    """Runs after the matrix (file order): what each request path touched, checked."""
    if not _on_the_path:
        pytest.skip("run together with the matrix above")
    named = {name for _, name in METHODS}
    assert named == {name for names in STORAGE_METHODS.values() for name in names}
    hot = {"lookup", "check_and_store", "get_credential", "append", "rotate", "revoke", "head"}
    assert hot <= set(_on_the_path), sorted(_on_the_path)
    assert "dpop proxy" in _on_the_path["check_and_store"]
    assert "bearer proxy" not in _on_the_path["check_and_store"]
    print(f"\nrequests sent with a fault set: {dict(_checked)}")
    print("request paths per storage method:")
    for _, name in METHODS:
        print(f"  {name}: {', '.join(sorted(_on_the_path.get(name, ()))) or 'not on any'}")


def test_faulty_store_mirrors_the_protocols_of_what_it_wraps() -> None:
    from agentguard.storage import AuditStore, KeyStore, ReplayCache

    wrapped = FaultyStore(MemoryStore())
    assert isinstance(wrapped, KeyStore) and isinstance(wrapped, AuditStore)
    assert isinstance(wrapped, ReplayCache)

    class OnlyReplay:
        async def check_and_store(self, key: bytes, expires_at: object) -> bool:
            return True

    partial = FaultyStore(OnlyReplay())
    assert isinstance(partial, ReplayCache) and not isinstance(partial, KeyStore)
    with pytest.raises(ValueError, match="not a storage Protocol method"):
        partial.fail("lookup")
    with pytest.raises(ValueError, match="times"):
        partial.fail("check_and_store", times=0)
