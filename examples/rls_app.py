# ruff: noqa: S608 - the table name is this module's own constant, never request input
"""Row-level security in practice: broad queries, yet each agent sees only its user's rows.

The handlers below are written carelessly on purpose: ``SELECT * FROM contacts`` with no
``WHERE owner_id``, updates and deletes by id alone, and a filter the agent controls. PostgreSQL
policies keyed on the request's principal make them safe anyway (see
``docs/how-to/row-level-security.md`` for the SQL, which :func:`install_schema` runs).

    app, guard, pool = await create_app(dsn, schema="crm_demo", role="crm_app")
"""

from __future__ import annotations

from typing import Any

import asyncpg
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from agentguard import Guard, PostgresStore, RouteRule
from agentguard.asgi import AgentGuardMiddleware
from agentguard.rls import principal_transaction

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
    dsn: str, *, schema: str, role: str
) -> tuple[AgentGuardMiddleware, Guard, Any]:
    """The guarded app, its guard (keys live in ``<schema>_keys``) and the data pool."""
    store = PostgresStore(dsn, schema=f"{schema}_keys")
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
