"""A proxied call with the user's connected account against the same call with a vault key.

Drives the proxy through the ASGI interface (no sockets; the vendor is an in-process fake), in
one run, interleaved rounds: the credential is an operator-set vault key (one store read and
one AES-GCM open per call), or the user's connected account (one store read and one AES-GCM
open per call while the token is fresh). Both on the in-memory store and on SQLite. Then the
refresh single flight: 50 concurrent calls on one stale connection, timed, with the refreshes
counted at the vendor (one expected).

    python benchmarks/bench_connect.py [--requests N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx
from bench_guard import App, measure
from report import Row, record
from starlette.applications import Starlette
from starlette.routing import Mount

from agentguard import Guard, ServiceConfig
from agentguard._model import CredentialOwner, CredentialScope, Grants, Principal
from agentguard.asgi import ProxyApp
from agentguard.connect import ConnectedAccounts, VendorClient, VendorTokens
from agentguard.credentials import CredentialSwapper, CredentialVault, KeyRing
from agentguard.storage import MemoryStore, SQLiteStore
from agentguard.testing import FakeClock, FakeOAuthVendor, FakeUpstream, make_user
from agentguard.testing._fakes import FakeClock as _Clock

VENDOR = "https://vendor.bench"


async def proxied(store: Any, *, connected: bool) -> tuple[App, str, Any]:
    """The guarded proxy for ``crm`` with a vault key or the user's connected account."""
    clock: _Clock = FakeClock()
    vendor = FakeOAuthVendor(users=("alice-v",), clock=clock, base_url=VENDOR, token_ttl=86400)
    upstream = FakeUpstream("crm")  # accepts any key: the swap is what is measured
    if connected:
        service = ServiceConfig(
            name="crm", base_url=VENDOR + "/api", credentials="connected",
            oauth=vendor.oauth_config(),
        )  # fmt: skip
    else:
        service = ServiceConfig(name="crm", base_url=VENDOR + "/api")
    guard = Guard(store, services=[service], clock=clock)
    user = await make_user(store, user_id="alice", grants="crm:read")
    keys = await guard.issuer.issue(user.id, "ws-1")
    keyring = KeyRing.generate()
    vault = CredentialVault(store, keyring, clock=clock)
    client = VendorClient(
        "crm", vendor.oauth_config(), client_secret=vendor.client_secret,
        transport=httpx.ASGITransport(app=vendor), clock=clock,
    )  # fmt: skip
    accounts = ConnectedAccounts(store, keyring, {"crm": client}, clock=clock)
    if connected:
        tokens = VendorTokens(
            access_token=_token("at"), refresh_token=_token("rt"), expires_at=None
        )
        await accounts.connect("crm", user.id, tokens)
    else:
        secret = "crm-user-" + "Zq4x" * 8
        await vault.put("crm", CredentialOwner.USER, user.id, secret, scope=CredentialScope.USER)
    swapper = CredentialSwapper(vault, connections=accounts, clock=clock)
    proxy = ProxyApp(guard, service, swapper, transport=httpx.ASGITransport(app=upstream))
    return Starlette(routes=[Mount("/crm", app=proxy)]), keys.access_key.reveal(), proxy


def _token(kind: str) -> Any:
    from agentguard._secret import Secret

    return Secret(f"bench-{kind}-" + "Q7pz" * 8)


async def refresh_storm(store: Any) -> tuple[float, int]:
    """50 concurrent token_for on one stale connection: seconds taken, refreshes at the vendor."""
    clock: _Clock = FakeClock()
    vendor = FakeOAuthVendor(users=("alice-v",), clock=clock, base_url=VENDOR, token_ttl=600)
    client = VendorClient(
        "crm", vendor.oauth_config(), client_secret=vendor.client_secret,
        transport=httpx.ASGITransport(app=vendor), clock=clock,
    )  # fmt: skip
    user = await make_user(store, user_id="storm", grants="crm:read")
    accounts = ConnectedAccounts(store, KeyRing.generate(), {"crm": client}, clock=clock)
    vendor.auto_approve = "alice-v"
    authorize = await client.authorization_url(
        redirect_uri="https://gw.bench/connect/crm/callback",
        state="s" * 43,
        code_challenge="E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=vendor)) as browser:
        redirect = (await browser.get(authorize)).headers["location"]
    code = httpx.URL(redirect).params["code"]
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    tokens = await client.exchange_code(
        code, redirect_uri="https://gw.bench/connect/crm/callback", code_verifier=verifier
    )
    await accounts.connect("crm", user.id, tokens)
    clock.advance(590)  # inside refresh_ahead: every caller wants a renewal
    principal = Principal(
        user_id=user.id,
        account_id=user.account_id,
        workspace_id="ws-1",
        key_id="k",
        family_id="f",
        grants=Grants.from_scope("crm:read"),
        expires_at=clock.now() + timedelta(hours=1),
    )
    before = vendor.refresh_calls
    started = anyio.current_time()
    async with anyio.create_task_group() as tasks:
        for _ in range(50):
            tasks.start_soon(accounts.token_for, principal, "crm")
    return anyio.current_time() - started, vendor.refresh_calls - before


async def main(requests: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        sqlite = SQLiteStore(Path(directory) / "bench.db")
        await sqlite.initialize()
        sqlite2 = SQLiteStore(Path(directory) / "bench2.db")
        await sqlite2.initialize()
        apps = {
            "vault key, memory": await proxied(MemoryStore(), connected=False),
            "connected account, memory": await proxied(MemoryStore(), connected=True),
            "vault key, SQLite": await proxied(sqlite, connected=False),
            "connected account, SQLite": await proxied(sqlite2, connected=True),
        }
        rounds: dict[str, list[float]] = {name: [] for name in apps}
        for _ in range(3):  # interleaved rounds even out machine noise
            for name, (app, key, _proxy) in apps.items():
                rounds[name].append(statistics.median(await measure(app, key, requests)))
        storm_seconds, refreshes = await refresh_storm(MemoryStore())
        for _app, _key, proxy in apps.values():
            await proxy.aclose()
        await sqlite.close()
        await sqlite2.close()
    print(f"proxied call, 3 rounds (median µs/request; {requests} requests)")
    rows: list[Row] = []
    for backend in ("memory", "SQLite"):
        base = statistics.median(rounds[f"vault key, {backend}"])
        value = statistics.median(rounds[f"connected account, {backend}"])
        print(f"{'vault key, ' + backend:<34}{base:>9.1f} µs")
        print(
            f"{'connected account, ' + backend:<34}{value:>9.1f} µs   "
            f"{value / base:.2f}x the vault key  ({value - base:+.1f} µs)"
        )
        rows.append(
            Row("connect", f"connected account ({backend})", value, "µs",
                f"vault key ({backend})", base, True)
        )  # fmt: skip
    print(
        f"refresh single flight: 50 concurrent calls on a stale connection took "
        f"{storm_seconds * 1000:.1f} ms; refreshes at the vendor: {refreshes} (expected 1)"
    )
    record(rows)
    if refreshes != 1:
        raise SystemExit("the refresh single flight let more than one refresh through")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000)
    anyio.run(main, parser.parse_args().requests)
