"""How the app examples start: their store, a demo user's keys, and the server's address.

Every app example keeps its users and keys in a SQLite file, so the ``agentguard`` CLI manages
the same users as the running app::

    python -m examples.starlette_app --print-keys      # seeds alice, prints her keys, serves
    curl -H "Authorization: Bearer <access key>" http://127.0.0.1:8000/crm/contacts
    agentguard users disable alice --store sqlite:///agentguard-examples.db   # next call: 401

The store is ``--store``, else ``$AGENTGUARD_STORE``, else ``sqlite:///agentguard-examples.db``
in the working directory (created with mode 0600). ``--print-keys`` creates account ``demo``,
workspace ``demo`` and user ``alice`` when they are missing (an existing alice is left as she
is: a disabled alice gets no keys), issues a new unbound key pair and prints it. Printing keys
is for trying an example on your own machine; real agents get theirs in a private file from
``agentguard keys issue``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import anyio

from agentguard import ConfigurationError, Guard, IssuanceRefused
from agentguard.model import Account, Grants, IssuedKeys, User, Workspace
from agentguard.storage.urls import open_store

__all__ = ["DEFAULT_STORE", "demo_keys", "options", "parser", "store_url"]

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
        help=f"create user {USER} if missing and print a new access and refresh key",
    )
    return parser


def options(doc: str | None, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The parsed command line: ``store``, ``host``, ``port``, ``print_keys``."""
    return parser(doc).parse_args(argv)


async def _issue(url: str, grants: str) -> IssuedKeys:
    store = open_store(url)
    try:
        if await store.get_account(ACCOUNT) is None:
            await store.put_account(Account(id=ACCOUNT, name="Demo"))
        if await store.get_workspace(WORKSPACE) is None:
            await store.put_workspace(Workspace(id=WORKSPACE, account_id=ACCOUNT))
        if await store.get_user(USER) is None:
            user = User(id=USER, account_id=ACCOUNT, grants=Grants.from_scope(grants))
            await store.put_user(user)
            await store.set_membership(USER, WORKSPACE, member=True)
        issued: IssuedKeys = await Guard(store).issuer.issue(USER, WORKSPACE)
        return issued
    finally:
        close = getattr(store, "close", None)  # a memory:// store has nothing to close
        if close is not None:
            await close()


def demo_keys(args: argparse.Namespace, grants: str) -> None:
    """With ``--print-keys``: seed the demo user with ``grants`` and print a new key pair.

    Exits with status 1 and a one-line reason when alice is disabled or the store URL is bad.
    """
    if not args.print_keys:
        return
    try:
        keys = anyio.run(_issue, args.store, grants)
    except (IssuanceRefused, ConfigurationError) as error:  # a disabled alice, a bad --store
        sys.exit(f"no keys for {USER}: {error.description}")
    print(f"user:        {USER} (workspace {WORKSPACE}, grants {grants!r}, store {args.store})")
    print(f"access key:  {keys.access_key.reveal()}")
    print(f"refresh key: {keys.refresh_key.reveal()}")
    print(f"serving on:  http://{args.host}:{args.port}", flush=True)
