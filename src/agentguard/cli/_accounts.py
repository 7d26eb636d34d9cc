"""``agentguard accounts``: add, close, reopen.

Closing appends an ``account.close`` audit event; reopening appends one with
``account.reopen``. Exit codes: 0 done,
1 refused (unknown account), 2 usage or environment.
"""

from __future__ import annotations

import argparse

from agentguard._model import Account, AccountStatus
from agentguard.audit._events import Action
from agentguard.cli._errors import CommandRefused
from agentguard.cli._operator import Access, Operator, run_command
from agentguard.cli._output import emit_json

__all__ = ["run"]


async def _add(operator: Operator, args: argparse.Namespace) -> int:
    if await operator.store.get_account(args.account) is not None:
        raise CommandRefused(f"account {args.account!r} exists")
    account = Account(id=args.account, name=args.name or args.account)
    await operator.store.put_account(account)
    if args.json:
        emit_json(account.model_dump(mode="json"))
    else:
        print(f"added account {account.id}")
    return 0


async def _set_status(operator: Operator, args: argparse.Namespace, status: AccountStatus) -> int:
    account: Account | None = await operator.store.get_account(args.account)
    if account is None:
        raise CommandRefused(f"no account {args.account!r}")
    if account.status is not status:
        await operator.store.put_account(account.model_copy(update={"status": status}))
        reopened = status is AccountStatus.ACTIVE
        await operator.record(
            Action.ACCOUNT_REOPEN if reopened else Action.ACCOUNT_CLOSE,
            account_id=account.id,
            reason=args.reason or None,
        )
    print(f"account {account.id} {status.value}")
    return 0


async def _close(operator: Operator, args: argparse.Namespace) -> int:
    return await _set_status(operator, args, AccountStatus.CLOSED)


async def _reopen(operator: Operator, args: argparse.Namespace) -> int:
    return await _set_status(operator, args, AccountStatus.ACTIVE)


def run(args: argparse.Namespace) -> int:
    """Dispatch an ``accounts`` subcommand."""
    handlers = {"add": _add, "close": _close, "reopen": _reopen}
    # the first step of every set-up: the one operator command that may create the store
    access = {"add": Access.CREATE}
    return run_command("accounts", handlers, args, args.accounts_command, access)
