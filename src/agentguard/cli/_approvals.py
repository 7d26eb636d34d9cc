"""``agentguard approvals``: list, show, approve, deny.

Works on the store directly (``--config`` / ``--store``), like every operator command, so it
needs no running gateway; the operator listener's ``/approvals`` endpoint does the same over
HTTP. A decision is recorded in the audit log (``approval.decide``, ``via`` ``cli``) with the
operator's name: ``--as NAME``, else the login name. Exit codes: 0 done, 1 refused (no such
approval, or one that is no longer pending: decided, used or expired), 2 usage or environment.
"""

from __future__ import annotations

import argparse
import getpass

from agentguard._model import ApprovalRecord
from agentguard.approvals._decide import ApprovalNotPending, decide
from agentguard.approvals._notify import WebhookNotifier
from agentguard.approvals._queue import approval_document, find_approvals
from agentguard.cli._errors import CommandError, CommandRefused
from agentguard.cli._operator import Access, Operator, run_command
from agentguard.cli._output import emit_json

__all__ = ["login_name", "printable", "run"]

_FIELDS = (
    "state", "user_id", "workspace_id", "account_id", "key_id", "family_id", "service", "scope",
    "method", "path", "query", "body_digest", "body_bytes", "rule_version", "created_at",
    "expires_at", "decided_at", "decided_by", "consumed_at",
)  # fmt: skip


def login_name() -> str:
    """The name of the person running the command, as other commands record it."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in some containers
        return "unknown"


def printable(text: str, *, lines: bool = False) -> str:
    """``text`` safe for a terminal: control characters (an ANSI escape an agent put in a
    body to hide or rewrite what the operator sees) shown as ``\\x1b`` escapes; newlines and
    tabs kept when ``lines``."""
    kept = "\n\t" if lines else ""
    return "".join(ch if ch.isprintable() or ch in kept else ascii(ch)[1:-1] for ch in text)


def _line(record: ApprovalRecord, operator: Operator) -> str:
    now = operator.audit_clock.now()
    service = record.service or "-"
    text = (
        f"{record.id}  {record.state(now):<8}  {record.user_id}  {service}  "
        f"{record.method} {record.path}  expires {approval_document(record, now)['expires_at']}"
    )
    return printable(text)


async def _list(operator: Operator, args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= 1000:
        raise CommandError("--limit is from 1 to 1000")
    now = operator.audit_clock.now()
    found = await find_approvals(
        operator.store, state=args.status, user_id=args.user, limit=args.limit, now=now
    )
    if args.json:
        emit_json([approval_document(record, now) for record in found])
        return 0
    for record in found:
        print(_line(record, operator))
    if not found:
        print("no approvals")
    return 0


async def _get(operator: Operator, approval_id: str) -> ApprovalRecord:
    record: ApprovalRecord | None = await operator.store.get_approval(approval_id)
    if record is None:
        raise CommandRefused(f"no approval {approval_id!r}")
    return record


async def _show(operator: Operator, args: argparse.Namespace) -> int:
    record = await _get(operator, args.approval_id)
    document = approval_document(record, operator.audit_clock.now())
    if args.json:
        emit_json(document)
        return 0
    print(f"approval {record.id}")
    for name in _FIELDS:
        value = document[name]
        shown = "-" if value is None or value == "" else printable(str(value))
        print(f"  {name + ':':<14} {shown}")
    print(f"  headers:\n{printable(record.headers, lines=True) or '(none bound)'}")
    preview = record.body_preview
    more = " (first part)" if len(preview.encode()) < record.body_bytes else ""
    print(f"  body{more}:\n{printable(preview, lines=True) or '(empty)'}")
    return 0


async def _decide(operator: Operator, args: argparse.Namespace, approve: bool) -> int:
    name = args.operator_name if args.operator_name is not None else login_name()
    if not 0 < len(name) <= 128:
        raise CommandError("--as is 1 to 128 characters")
    notifier = _notifier(operator)
    try:
        record = await decide(
            operator.store,
            operator.audit,
            args.approval_id,
            approve=approve,
            by=name,
            clock=operator.audit_clock,
            notifier=notifier,
            via="cli",
        )
    except ApprovalNotPending as refused:
        raise CommandRefused(str(refused)) from None
    finally:
        if notifier is not None:  # deliver before the command's event loop ends
            await notifier.aclose()
    if args.json:
        emit_json(approval_document(record, operator.audit_clock.now()))
        return 0
    verb = "approved" if approve else "denied"
    text = f"{verb} {record.id}: {record.method} {record.path} for {record.user_id} (by {name})"
    print(printable(text))
    return 0


def _notifier(operator: Operator) -> WebhookNotifier | None:
    """The webhook ``[approvals] webhook_url`` names, so a decision made here is announced
    like one made on the operator listener; ``None`` without one (or without its secret)."""
    settings = operator.settings
    if settings is None or settings.approvals.webhook_url is None:
        return None
    secret = settings.secret_values.approval_webhook_secret
    if secret is None:
        return None
    return WebhookNotifier(
        settings.approvals.webhook_url,
        secret.get_secret_value(),
        retries=settings.approvals.webhook_retries,
    )


async def _approve(operator: Operator, args: argparse.Namespace) -> int:
    return await _decide(operator, args, approve=True)


async def _deny(operator: Operator, args: argparse.Namespace) -> int:
    return await _decide(operator, args, approve=False)


def run(args: argparse.Namespace) -> int:
    """Dispatch an ``approvals`` subcommand."""
    handlers = {"list": _list, "show": _show, "approve": _approve, "deny": _deny}
    access = {"list": Access.READ_ONLY, "show": Access.READ_ONLY}
    return run_command("approvals", handlers, args, args.approvals_command, access)
