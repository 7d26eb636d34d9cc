"""Route rules: what 1,000 rules cost next to 10, per guarded request and per rule lookup.

Issue 17's target: 1,000 rules cost at most 1.5x 10 rules. Both rule sets cover the request's
path (``/crm/contacts``) with the same rule; the others are unrelated services' prefixes of
the same depth (``/svc123/items``), so a linear scan would pay for each and a trie does not.
Measured two ways, in one run with rounds interleaved: ``PermissionChecker.requirement`` alone,
and a whole guarded request on the in-memory store (as ``bench_guard.py`` drives it).

    python benchmarks/bench_rules.py [--requests N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import anyio
from bench_guard import contacts, measure
from report import Row, record
from starlette.applications import Starlette
from starlette.routing import Route

from agentguard import Guard, PermissionChecker, RouteRule
from agentguard.asgi import AgentGuardMiddleware
from agentguard.storage import MemoryStore
from agentguard.testing import make_user

PATHS = ("/crm/contacts", "/crm/contacts/42.json", "/CRM/Contacts/42/notes")


def rules(count: int) -> list[RouteRule]:
    found = [RouteRule("/crm", service="crm")]
    found += [RouteRule(f"/svc{n}/items", service=f"svc{n}") for n in range(count - 1)]
    return found


def lookup_us(checker: PermissionChecker, repeats: int) -> float:
    """Median µs of one ``requirement`` call over ``PATHS``."""
    samples = []
    for _ in range(repeats):
        started = time.perf_counter_ns()
        for path in PATHS:
            checker.requirement("GET", path)
        samples.append((time.perf_counter_ns() - started) / 1000 / len(PATHS))
    return statistics.median(samples)


async def guarded(count: int) -> tuple[AgentGuardMiddleware, str]:
    store = MemoryStore()
    guard = Guard(store, rules=rules(count))
    user = await make_user(store, grants="crm:read")
    keys = await guard.issuer.issue(user.id, "ws-1")
    app = AgentGuardMiddleware(Starlette(routes=[Route("/crm/contacts", contacts)]), guard)
    return app, keys.access_key.reveal()


async def main(requests: int) -> None:
    sizes = (10, 1000)
    checkers = {size: PermissionChecker(rules(size)) for size in sizes}
    apps = {size: await guarded(size) for size in sizes}
    lookups: dict[int, list[float]] = {size: [] for size in sizes}
    whole: dict[int, list[float]] = {size: [] for size in sizes}
    for _ in range(3):
        for size in sizes:
            lookups[size].append(lookup_us(checkers[size], requests))
            app, key = apps[size]
            whole[size].append(statistics.median(await measure(app, key, requests)))
    rows = []
    print(f"route rules, 3 interleaved rounds, {requests} requests each (median µs)")
    for label, figures in (("rule lookup", lookups), ("guarded request", whole)):
        small, large = (statistics.median(figures[size]) for size in sizes)
        print(f"{label:<18} 10 rules {small:8.2f} µs   1000 rules {large:8.2f} µs   "
              f"{large / small:5.2f}x")  # fmt: skip
        rows.append(
            Row("rules", f"{label}, 1000 rules", large, "µs", f"{label}, 10 rules", small, True)
        )
    record(rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    anyio.run(main, parser.parse_args().requests)
