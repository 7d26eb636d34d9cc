# ruff: noqa: S608 - the table name is this module's own constant, never request input
"""Row-level security in practice: broad queries, yet each agent sees only its user's rows.

The handlers below are written carelessly on purpose: ``SELECT * FROM contacts`` with no
``WHERE owner_id``, updates and deletes by id alone, and a filter the agent controls. PostgreSQL
policies keyed on the request's principal make them safe anyway (see
``docs/how-to/row-level-security.md`` for the SQL, which :func:`install_schema` runs).

    python -m examples.rls_app --dsn postgresql://localhost/app --print-keys   # serves :8000
    curl -H "Authorization: Bearer <access key>" http://127.0.0.1:8000/crm/contacts
    agentguard users disable alice --store sqlite:///agentguard-examples.db   # then: 401

The contacts live in PostgreSQL (``--dsn`` or ``$DATABASE_URL``; the schema ``crm_demo`` and
role ``crm_app`` are created on first start); users and keys live in ``--store`` (see
``examples/launch.py``). In code::

    app, guard, pool = await create_app(dsn, schema="crm_demo", role="crm_app")
"""

from __future__ import annotations

import os
import sys
from typing import Any

import anyio
import asyncpg
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from agentguard import Guard, RouteRule
from agentguard.asgi import AgentGuardMiddleware
from agentguard.rls import principal_transaction
from agentguard.storage import PostgresStore, open_store
from examples import launch

SCHEMA_SQL = """
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE {schema}.contacts (
    id serial PRIMARY KEY,
    owner_id text NOT NULL,
    name text NOT NULL
);
ALTER TABLE {schema}.contacts ENABLE ROW LEVEL SECURITY;
ALTER TABLE {schema}.contacts FORCE ROW LEVEL SECURITY;
CREATE POLICY contacts_owner ON {schema}.contacts
    USING (owner_id = NULLIF(current_setting('agentguard.user_id', true), ''))
    WITH CHECK (owner_id = NULLIF(current_setting('agentguard.user_id', true), ''));
CREATE ROLE {role} NOLOGIN NOSUPERUSER NOBYPASSRLS;
GRANT USAGE ON SCHEMA {schema} TO {role};
GRANT SELECT, INSERT, UPDATE, DELETE ON {schema}.contacts TO {role};
GRANT USAGE ON SEQUENCE {schema}.contacts_id_seq TO {role};
GRANT {role} TO CURRENT_USER;
"""


async def install_schema(connection: asyncpg.Connection, schema: str, role: str) -> None:
    """Create the contacts table, its policy and the non-owner role (names are trusted)."""
    await connection.execute(SCHEMA_SQL.format(schema=schema, role=role))


async def create_app(
    dsn: str, *, schema: str, role: str, store_url: str | None = None
) -> tuple[AgentGuardMiddleware, Guard, Any]:
    """The guarded app, its guard and the data pool.

    Users and keys live in ``store_url``, by default in the PostgreSQL schema ``<schema>_keys``.
    """
    store = open_store(store_url) if store_url else PostgresStore(dsn, schema=f"{schema}_keys")
    await store.initialize()
    guard = Guard(store, rules=[RouteRule("/crm", service="crm")])
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    table = f"{schema}.contacts"

    async def list_contacts(request: Request) -> JSONResponse:
        owner = request.query_params.get("owner_id")  # an agent-chosen filter, trusted blindly
        async with principal_transaction(pool, role=role) as connection:
            if owner is None:
                rows = await connection.fetch(f"SELECT * FROM {table} ORDER BY id")
            else:
                rows = await connection.fetch(
                    f"SELECT * FROM {table} WHERE owner_id = $1 ORDER BY id",
                    owner,
                )
        return JSONResponse([dict(row) for row in rows])

    async def add_contact(request: Request) -> JSONResponse:
        body = await request.json()
        async with principal_transaction(pool, role=role) as connection:
            try:
                row = await connection.fetchrow(
                    f"INSERT INTO {table} (owner_id, name) VALUES ($1, $2) RETURNING id",
                    body["owner_id"],
                    body["name"],
                )
            except asyncpg.InsufficientPrivilegeError:
                return JSONResponse({"error": "row refused by policy"}, status_code=403)
        return JSONResponse({"id": row["id"]}, status_code=201)

    async def change_contact(request: Request) -> JSONResponse:
        contact_id = int(request.path_params["contact_id"])
        async with principal_transaction(pool, role=role) as connection:
            if request.method == "DELETE":
                status = await connection.execute(f"DELETE FROM {table} WHERE id = $1", contact_id)
            else:
                name = (await request.json())["name"]
                status = await connection.execute(
                    f"UPDATE {table} SET name = $2 WHERE id = $1",
                    contact_id,
                    name,
                )
        return JSONResponse({"affected": int(status.split()[-1])})

    app = Starlette(
        routes=[
            Route("/crm/contacts", list_contacts, methods=["GET"]),
            Route("/crm/contacts", add_contact, methods=["POST"]),
            Route("/crm/contacts/{contact_id:int}", change_contact, methods=["PATCH", "DELETE"]),
        ]
    )
    return AgentGuardMiddleware(app, guard), guard, pool


async def _prepare(args: Any) -> None:
    """Connect to the contacts database and create the schema on first start."""
    connection = await asyncpg.connect(args.dsn, timeout=10)
    try:
        if await connection.fetchval("SELECT to_regclass($1)", f"{args.schema}.contacts") is None:
            await install_schema(connection, args.schema, args.role)
    finally:
        await connection.close()


def prepare(args: Any) -> None:
    """:func:`_prepare`, or one line on stderr and exit status 2 if the database is not usable.

    Runs before any key is printed, so a wrong ``--dsn`` never leaves keys on the screen for a
    server that is not going to start.
    """
    try:
        anyio.run(_prepare, args)
    except (
        OSError,
        TimeoutError,
        ValueError,
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
    ) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"rls_app: cannot use the contacts database (--dsn): {reason}", file=sys.stderr)
        sys.exit(2)


async def _serve(args: Any) -> None:
    app, guard, pool = await create_app(
        args.dsn, schema=args.schema, role=args.role, store_url=args.store
    )
    try:
        await uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port)).serve()
    finally:
        with anyio.CancelScope(shield=True):
            await pool.close()
            await launch.close_guard(guard)  # SQLite checkpoints its log on close


if __name__ == "__main__":
    parser = launch.parser(__doc__)
    parser.add_argument("--dsn", default=os.environ.get("DATABASE_URL"), required=False)
    parser.add_argument("--schema", default="crm_demo")
    parser.add_argument("--role", default="crm_app")
    args = parser.parse_args()
    if not args.dsn:
        parser.error("--dsn (or $DATABASE_URL) names the PostgreSQL database for the contacts")
    prepare(args)
    launch.demo_keys(args, grants="crm:write")
    anyio.run(_serve, args)
