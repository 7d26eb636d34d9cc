"""How the app examples start: their store, a demo user's keys, and the server's address.

Every app example keeps its users and keys in a SQLite file, so the ``agentguard`` CLI manages
the same users as the running app::

    python -m examples.starlette_app --print-keys      # seeds alice, prints her keys, serves
    curl -H "Authorization: Bearer <access key>" http://127.0.0.1:8000/crm/contacts
    agentguard users disable alice --store sqlite:///agentguard-examples.db   # next call: 401

The store is ``--store``, else ``$AGENTGUARD_STORE``, else ``sqlite:///agentguard-examples.db``
in the working directory (created with mode 0600). ``--print-keys`` creates account ``demo``,
workspace ``demo`` and user ``alice`` when they are missing. An enabled alice who already
exists keeps her grants and gains the ones this example needs (each service at the higher of
the two levels; nothing is taken away, so the examples share one alice and keys printed by an
earlier example keep working); a disabled alice is left as she is and gets no keys. It then
issues a new unbound key pair and prints it with alice's grants as read back from the store.
Printing keys is for trying an example on your own machine; real agents get theirs in a
private file from ``agentguard keys issue``.

The examples close their store when the server stops (:func:`lifespan` for the ASGI apps,
:func:`close_at_exit` for the WSGI one), so SQLite checkpoints its write-ahead log on SIGTERM.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, NoReturn

import anyio

from agentguard import Account, Grants, Guard, IssuedKeys, User, Workspace
from agentguard.errors import ConfigurationError, IssuanceRefused
from agentguard.storage import open_store
from agentguard.wsgi import EventLoopPortal

__all__ = [
    "DEFAULT_STORE",
    "close_at_exit",
    "close_guard",
    "demo_keys",
    "lifespan",
    "options",
    "parser",
    "stop_on_sigterm",
    "store_url",
]

DEFAULT_STORE = "sqlite:///agentguard-examples.db"
ACCOUNT = WORKSPACE = "demo"
USER = "alice"


def store_url() -> str:
    """``$AGENTGUARD_STORE``, else the examples' SQLite file in the working directory."""
    return os.environ.get("AGENTGUARD_STORE", DEFAULT_STORE)


def parser(doc: str | None) -> argparse.ArgumentParser:
    """The command line every app example accepts (``doc``: the example's docstring)."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n", 1)[0])
    parser.add_argument("--store", default=store_url(), help="store URL (default: %(default)s)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--print-keys",
        action="store_true",
        help=f"create user {USER} if missing, add the grants this example needs, "
        "and print a new access and refresh key",
    )
    return parser


def options(doc: str | None, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The parsed command line: ``store``, ``host``, ``port``, ``print_keys``."""
    return parser(doc).parse_args(argv)


def union(held: Grants, needed: Grants) -> Grants:
    """Every service of either, at the higher of its two levels."""
    return Grants(
        {service: max(held.level(service), needed.level(service)) for service in {*held, *needed}}
    )


async def _issue(url: str, grants: str) -> tuple[IssuedKeys, Grants]:
    needed = Grants.from_scope(grants)
    store = open_store(url)
    try:
        if await store.get_account(ACCOUNT) is None:
            await store.put_account(Account(id=ACCOUNT, name="Demo"))
        if await store.get_workspace(WORKSPACE) is None:
            await store.put_workspace(Workspace(id=WORKSPACE, account_id=ACCOUNT))
        user = await store.get_user(USER)
        if user is None:
            await store.put_user(User(id=USER, account_id=ACCOUNT, grants=needed))
            await store.set_membership(USER, WORKSPACE, member=True)
        elif user.enabled and union(user.grants, needed) != user.grants:
            await store.put_user(user.model_copy(update={"grants": union(user.grants, needed)}))
        issued: IssuedKeys = await Guard(store).issuer.issue(USER, WORKSPACE)
        stored = await store.get_user(USER)
        return issued, stored.grants if stored is not None else Grants()
    finally:
        close = getattr(store, "close", None)  # a memory:// store has nothing to close
        if close is not None:
            await close()


def demo_keys(args: argparse.Namespace, grants: str) -> None:
    """With ``--print-keys``: give the demo user ``grants`` (added to hers) and print a new pair.

    Exits with status 1 and a one-line reason when alice is disabled or the store URL is bad.
    """
    if not args.print_keys:
        return
    try:
        keys, held = anyio.run(_issue, args.store, grants)
    except (IssuanceRefused, ConfigurationError) as error:  # a disabled alice, a bad --store
        sys.exit(f"no keys for {USER}: {error}")
    scope = held.to_scope()
    print(f"user:        {USER} (workspace {WORKSPACE}, grants {scope!r}, store {args.store})")
    print(f"access key:  {keys.access_key.reveal()}")
    print(f"refresh key: {keys.refresh_key.reveal()}")
    print(f"serving on:  http://{args.host}:{args.port}", flush=True)


async def close_guard(guard: Guard) -> None:
    """Write the audit events still buffered, then close the guard's store (if it closes)."""
    try:
        await guard.audit.flush()
    finally:
        close = getattr(guard.store, "close", None)
        if close is not None:
            await close()


Lifespan = Callable[[Any], AbstractAsyncContextManager[Any]]


def lifespan(guard: Guard, inner: Lifespan | None = None) -> Lifespan:
    """A Starlette/FastAPI ``lifespan`` that closes ``guard``'s store when the server stops.

    ``inner``: the app's own lifespan (an SDK's, say), run inside this one.
    """

    @contextlib.asynccontextmanager
    async def run(app: Any) -> AsyncIterator[Any]:
        try:
            if inner is None:
                yield None
            else:
                async with inner(app) as state:
                    yield state
        finally:
            with anyio.CancelScope(shield=True):
                await close_guard(guard)

    return run


def close_at_exit(guard: Guard, portal: EventLoopPortal) -> None:
    """For a WSGI app: close ``guard``'s store on ``portal``'s loop when the interpreter exits.

    Registered after :mod:`agentguard.wsgi._portal` registers the portal's own shutdown, so it
    runs first (``atexit`` runs last-registered first), while the loop is still there.
    """
    atexit.register(portal.call, close_guard, guard)


def _interrupt(signum: int, frame: object) -> NoReturn:
    raise KeyboardInterrupt


def stop_on_sigterm() -> None:
    """Treat SIGTERM like Ctrl-C, so the server returns and ``atexit`` handlers run."""
    signal.signal(signal.SIGTERM, _interrupt)
