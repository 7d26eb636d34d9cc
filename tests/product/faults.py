"""The gateway over a :class:`FaultyStore`, and the requests that walk every storage path.

One gateway (``build_gateway``) fronts one service. Its store is a ``MemoryStore`` wrapped in a
:class:`~agentguard.testing._faults.FaultyStore`, so each method of each storage Protocol can be
made to fail. :data:`PROBES` are the requests an agent and its operators make: a proxied call,
a refresh at the token endpoint, a revocation, an introspection, and the readiness probe; each
is sent with bearer keys or with DPoP-bound keys and proofs.
"""

from __future__ import annotations

import base64
import itertools
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import redis.exceptions
from pydantic import SecretStr

from agentguard import CredentialOwner, CredentialScope, Guard, IssuedKeys, User
from agentguard.config import SecretValues, Settings
from agentguard.credentials import CredentialVault
from agentguard.dpop import DPoPKey
from agentguard.errors import Reason
from agentguard.gateway import Gateway, build_gateway
from agentguard.storage import MemoryStore
from agentguard.testing import FakeUpstream, make_user
from agentguard.testing._faults import STORAGE_METHODS, FaultyStore

ORIGIN = "http://gw.test"
SERVICE = "crm"
VENDOR_KEY = "crm-vendor-key-" + "7" * 24
INTROSPECTION_SECRET = "introspect-" + "i" * 32
SCHEMES = ("bearer", "dpop")


class VendorOutage(Exception):
    """What a third-party backend might raise: no relation to anything we know."""


#: Exceptions a backend raises when it is down, by kind; each is a zero-argument factory.
ERRORS: dict[str, Callable[[], BaseException]] = {
    "OSError": lambda: ConnectionResetError(104, "Connection reset by peer"),
    "TimeoutError": TimeoutError,
    "sqlite3": lambda: sqlite3.OperationalError("database is locked"),
    "asyncpg": lambda: asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
    "redis": lambda: redis.exceptions.ConnectionError("Error 111 connecting"),
    "third-party": lambda: VendorOutage("backend says no"),
    "programming-error": lambda: TypeError("a bug in a backend"),
}

#: Every method of every storage Protocol, once, under the first Protocol that declares it.
METHODS: list[tuple[str, str]] = []
for _protocol, _names in STORAGE_METHODS.items():
    for _name in _names:
        if _name not in {name for _, name in METHODS}:
            METHODS.append((_protocol, _name))

#: What ``/readyz`` calls each store role when that probe fails.
READY_ROLES = {
    "lookup": "key store",
    "head": "audit store",
    "get_credential": "credential store",
    "check_and_store": "replay cache",
}

_ids = itertools.count()


def new_kek() -> str:
    return "kek-1:" + base64.urlsafe_b64encode(os.urandom(32)).decode()


def settings(origin: str = ORIGIN, **dpop: Any) -> Settings:
    """A gateway at ``origin`` with one service, DPoP optional, introspection on."""
    built = Settings.model_validate(
        {
            "public_origin": origin,
            "services": [{"name": SERVICE, "base_url": "https://crm.example"}],
            "dpop": dpop,
        }
    )
    secrets = SecretValues(
        kek=SecretStr(new_kek()), introspection_secrets=(SecretStr(INTROSPECTION_SECRET),)
    )
    return built.model_copy(update={"secret_values": secrets})


@dataclass
class World:
    """The gateway, its faulty store, and one user with keys of the chosen scheme."""

    scheme: str
    origin: str
    memory: Any
    store: FaultyStore
    gateway: Gateway
    user: User
    dpop_key: DPoPKey | None
    keys: IssuedKeys
    spare: IssuedKeys

    async def issue(self) -> IssuedKeys:
        jkt = self.dpop_key.thumbprint if self.dpop_key is not None else None
        return await self.gateway.guard.issuer.issue(self.user.id, "ws-1", jkt=jkt)

    async def renew(self) -> None:
        """Fresh keys: a refresh or a revocation may have used the old ones up."""
        self.keys = await self.issue()
        self.spare = await self.issue()

    def proof(self, method: str, url: str, access_key: str | None = None) -> dict[str, str]:
        if self.dpop_key is None:
            return {}
        return {"DPoP": self.dpop_key.proof(method, url, access_key=access_key)}

    def auth(self, path: str) -> dict[str, str]:
        access = self.keys.access_key.reveal()
        if self.dpop_key is None:
            return {"Authorization": f"Bearer {access}"}
        proof = self.proof("GET", self.origin + path, access)
        return {"Authorization": f"DPoP {access}", **proof}

    async def events(self, request_id: str) -> list[dict[str, Any]]:
        """The audit events of one request, read from the store behind the faults."""
        return [
            event
            for event in (entry.event() for entry in await self.memory.read())
            if event.get("request_id") == request_id
        ]


async def build_world(
    scheme: str,
    *,
    origin: str = ORIGIN,
    memory: Any = None,
    seed: Any = None,
    **dpop: Any,
) -> World:
    """The gateway at ``origin`` over ``FaultyStore(memory)``, with a user and fresh keys.

    ``memory`` is the store behind the faults (a new ``MemoryStore`` by default). ``seed``, when
    given, is another handle on the same data for the set-up, closed afterwards: a PostgreSQL
    pool belongs to one event loop, and the gateway's runs in the server's. ``dpop`` goes to
    the ``[dpop]`` settings (``replay="redis://..."``).
    """
    memory = memory if memory is not None else MemoryStore()
    store = FaultyStore(memory)
    gateway = build_gateway(
        settings(origin, **dpop),
        store=store,
        transports={SERVICE: httpx.ASGITransport(app=FakeUpstream(SERVICE, {VENDOR_KEY}))},
    )
    writer = seed if seed is not None else memory
    user = await make_user(writer, grants=f"{SERVICE}:read")
    vault = CredentialVault(writer, gateway.settings.keyring())
    await vault.put(SERVICE, CredentialOwner.USER, user.id, VENDOR_KEY, scope=CredentialScope.USER)
    dpop_key = DPoPKey.generate() if scheme == "dpop" else None
    world = World(scheme, origin, memory, store, gateway, user, dpop_key, None, None)  # type: ignore[arg-type]
    if seed is None:
        await world.renew()
    else:
        issuer = Guard(seed).issuer
        jkt = dpop_key.thumbprint if dpop_key is not None else None
        world.keys = await issuer.issue(user.id, "ws-1", jkt=jkt)
        world.spare = await issuer.issue(user.id, "ws-1", jkt=jkt)
        await seed.close()
    return world


def _request(
    world: World,
    method: str,
    path: str,
    headers: dict[str, str],
    form: dict[str, str] | None = None,
) -> httpx.Request:
    headers = {**headers, "X-Request-Id": f"fault-{next(_ids)}"}
    return httpx.Request(method, world.origin + path, headers=headers, data=form)


def proxied(world: World) -> httpx.Request:
    path = f"/{SERVICE}/contacts"
    return _request(world, "GET", path, world.auth(path))


def refresh(world: World) -> httpx.Request:
    form = {"grant_type": "refresh_token", "refresh_token": world.keys.refresh_key.reveal()}
    proof = world.proof("POST", world.origin + "/oauth/token")
    return _request(world, "POST", "/oauth/token", proof, form)


def revoke(world: World) -> httpx.Request:
    return _request(world, "POST", "/oauth/revoke", {}, {"token": world.spare.access_key.reveal()})


def introspect(world: World) -> httpx.Request:
    headers = {"Authorization": f"Bearer {INTROSPECTION_SECRET}"}
    form = {"token": world.keys.access_key.reveal()}
    return _request(world, "POST", "/oauth/introspect", headers, form)


def ready(world: World) -> httpx.Request:
    return _request(world, "GET", "/readyz", {})


#: In this order: the token refresh uses the pair up, so it comes after the proxied call.
PROBES: dict[str, Callable[[World], httpx.Request]] = {
    "proxy": proxied,
    "introspect": introspect,
    "revoke": revoke,
    "token": refresh,
    "readyz": ready,
}


def check_refusal(
    world: World, method: str, probe: str, response: httpx.Response, events: list[dict[str, Any]]
) -> None:
    """What a request whose storage call failed must get: 503, a clear body, an audit trail."""
    context = (
        f"{world.scheme} {probe} with {method} failing: {response.status_code} {response.text}"
    )
    assert response.status_code == 503, context
    body = response.json()
    if probe == "readyz":
        assert body["status"] == "unavailable", context
        assert READY_ROLES[method] in body["unavailable"], context
        return
    assert body["error"] == "temporarily_unavailable", context
    assert body["error_description"], context
    assert response.headers["retry-after"] == "1", context
    assert response.headers["cache-control"] == "no-store", context
    denials = [event for event in events if event.get("decision") == "deny"]
    if method == "append":  # the audit store is what is down: nothing can be recorded
        assert body["reason"] == Reason.AUDIT_UNAVAILABLE.value, context
        assert not events, (context, events)
    else:  # the audit store is up: the refusal is on record, with its reason
        assert body["reason"] == Reason.STORE_UNAVAILABLE.value, context
        assert [event["reason"] for event in denials] == [Reason.STORE_UNAVAILABLE.value], (
            context,
            events,
        )
        assert denials[0]["status"] == 503, (context, denials)
