"""PostgreSQL row-level security bound to the request's Principal.

:func:`principal_transaction` opens a transaction in which PostgreSQL knows who is calling:

- ``SET LOCAL ROLE <role>`` (optional) switches to a role that does not own the tables, so
  the policies apply to it (a table's owner and superusers bypass them unless the table is
  ``FORCE ROW LEVEL SECURITY``);
- ``set_config('agentguard.user_id' | 'agentguard.workspace_id' | 'agentguard.account_id',
  value, true)`` records the caller for the policies to read with ``current_setting``.

Both are transaction-local: they end with the transaction, so a pooled connection never
carries one caller's identity into another's request. Policies then decide which rows exist;
even a deliberately broad ``SELECT * FROM contacts`` returns only the caller's rows. The SQL is
in ``docs/how-to/row-level-security.md``.

Works with ``asyncpg`` connections and pools (the ``agentguard[postgres]`` extra).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from agentguard._context import current_principal
from agentguard._model._principal import Principal

__all__ = ["SETTINGS", "principal_transaction"]

SETTINGS = ("agentguard.user_id", "agentguard.workspace_id", "agentguard.account_id")
"""The settings a transaction carries, in the order of :class:`Principal` fields they hold."""

_ROLE = re.compile(r"[a-z_][a-z0-9_$]{0,62}")

_BIND = """SELECT set_config('agentguard.user_id', $1, true),
    set_config('agentguard.workspace_id', $2, true),
    set_config('agentguard.account_id', $3, true)"""


def _quote_role(role: str) -> str:
    if _ROLE.fullmatch(role) is None:
        raise ValueError(
            "a role name is 1-63 characters of lower-case letters, digits, '_' or '$', "
            "not starting with a digit"
        )
    return f'"{role}"'


@asynccontextmanager
async def principal_transaction(
    connection_or_pool: Any,
    principal: Principal | None = None,
    *,
    role: str | None = None,
) -> AsyncIterator[Any]:
    """A transaction on ``connection_or_pool`` bound to ``principal``; yields the connection.

    Args:
        connection_or_pool: an ``asyncpg`` connection that is not already in a transaction, or
            a pool to take one from (returned when the block ends).
        principal: whose rows the transaction may see; the current request's Principal
            (:func:`agentguard.current_principal`) by default, which raises
            ``LookupError`` outside a guarded request.
        role: a role to ``SET LOCAL ROLE`` to, typically a non-owner role the policies apply
            to; a plain lower-case identifier.

    The transaction commits when the block exits normally and rolls back on an exception.
    """
    quoted_role = None if role is None else _quote_role(role)
    who = current_principal() if principal is None else principal
    if hasattr(connection_or_pool, "acquire") and not hasattr(connection_or_pool, "transaction"):
        async with (
            connection_or_pool.acquire() as connection,
            _bound(connection, who, quoted_role) as bound,
        ):
            yield bound
        return
    async with _bound(connection_or_pool, who, quoted_role) as bound:
        yield bound


@asynccontextmanager
async def _bound(
    connection: Any, principal: Principal, quoted_role: str | None
) -> AsyncIterator[Any]:
    if connection.is_in_transaction():
        # SET LOCAL inside an outer transaction would outlive this block.
        raise RuntimeError("principal_transaction needs a connection outside any transaction")
    async with connection.transaction():
        if quoted_role is not None:
            await connection.execute(f"SET LOCAL ROLE {quoted_role}")
        await connection.execute(
            _BIND, principal.user_id, principal.workspace_id, principal.account_id
        )
        yield connection
