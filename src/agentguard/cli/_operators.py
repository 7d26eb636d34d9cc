"""``agentguard operators``: issue, list, revoke operator tokens.

``issue`` prints the token on stdout once (``TOKEN=$(agentguard operators issue --name ci)``
works) and its id and expiry on stderr; only the token's SHA-256 is stored, and the audit
event (``operator.issue``) names the token's id and name, never the token. ``revoke`` records
``operator.revoke``. Exit codes: 0 done, 1 refused (no such operator token, or revoked
already), 2 usage or environment.
"""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta

from agentguard._model import OperatorRecord
from agentguard.approvals._operators import issue_operator_token, revoke_operator_token
from agentguard.audit._events import Action
from agentguard.cli._errors import CommandError, CommandRefused
from agentguard.cli._operator import Access, Operator, run_command
from agentguard.cli._output import emit_json

__all__ = ["run"]

_MAX_TTL = 10 * 366 * 86400


def _when(record: OperatorRecord, attribute: str) -> str | None:
    moment = getattr(record, attribute)
    return None if moment is None else moment.isoformat()


def _state(record: OperatorRecord, operator: Operator) -> str:
    if record.revoked_at is not None:
        return "revoked"
    return "active" if record.usable(operator.audit_clock.now()) else "expired"


def _row(record: OperatorRecord, operator: Operator) -> dict[str, object]:
    return {
        "id": record.id,
        "name": record.name,
        "state": _state(record, operator),
        "created_at": _when(record, "created_at"),
        "expires_at": _when(record, "expires_at"),
        "revoked_at": _when(record, "revoked_at"),
    }


async def _issue(operator: Operator, args: argparse.Namespace) -> int:
    name = args.name.strip()
    if not 0 < len(name) <= 128 or not name.isprintable():
        raise CommandError("--name is 1 to 128 printable characters")
    if args.ttl is not None and not 0 < args.ttl <= _MAX_TTL:
        raise CommandError(f"--ttl is a positive number of seconds, at most {_MAX_TTL} (10 years)")
    ttl = timedelta(seconds=args.ttl) if args.ttl is not None else None
    token, record = await issue_operator_token(
        operator.store, name, clock=operator.audit_clock, ttl=ttl
    )
    await operator.record(
        Action.OPERATOR_ISSUE,
        detail={"operator_id": record.id, "operator_name": record.name},
    )
    if args.json:
        emit_json({**_row(record, operator), "token": token.reveal()})
        return 0
    print(token.reveal())
    expires = _when(record, "expires_at") or "never"
    print(
        f"operator token {record.id} for {record.name}, expires {expires}; "
        "shown once: store it now",
        file=sys.stderr,
    )
    return 0


async def _list(operator: Operator, args: argparse.Namespace) -> int:
    records: list[OperatorRecord] = await operator.store.list_operators()
    rows = [_row(record, operator) for record in records]
    if args.json:
        emit_json(rows)
        return 0
    for row in rows:
        expires = row["expires_at"] or "never"
        print(f"{row['id']}  {row['name']}  {row['state']:<7}  expires {expires}")
    if not rows:
        print("no operator tokens")
    return 0


async def _revoke(operator: Operator, args: argparse.Namespace) -> int:
    records: list[OperatorRecord] = await operator.store.list_operators()
    record = next((r for r in records if r.id == args.operator_id), None)
    if record is None:
        raise CommandRefused(f"no operator token {args.operator_id!r}")
    if not await revoke_operator_token(operator.store, record.id, now=operator.audit_clock.now()):
        raise CommandRefused(f"operator token {record.id!r} was revoked already")
    await operator.record(
        Action.OPERATOR_REVOKE,
        detail={"operator_id": record.id, "operator_name": record.name},
    )
    print(f"revoked operator token {record.id} ({record.name})")
    return 0


def run(args: argparse.Namespace) -> int:
    """Dispatch an ``operators`` subcommand."""
    handlers = {"issue": _issue, "list": _list, "revoke": _revoke}
    access = {"list": Access.READ_ONLY}
    return run_command("operators", handlers, args, args.operators_command, access)
