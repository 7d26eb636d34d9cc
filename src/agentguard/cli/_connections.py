"""``agentguard connections``: list, link, disconnect users' connected vendor accounts.

Works on the store directly (``--config`` / ``--store``), like every operator command; the
operator listener's ``/connections`` endpoints do the same over HTTP. ``list`` shows status,
scopes and times, never a token. ``link`` prints a one-time connect link on stdout for the
user's human (a secret: whoever opens it first connects as that user) and a warning on stderr;
it is audited (``connection.link``) with the operator's name (``--as NAME``, else the login
name), never with the link. ``disconnect`` revokes at the vendor when it offers RFC 7009 (so it
needs the service's client secret, as the gateway does), deletes the connection and audits
``connection.disconnect``. Exit codes: 0 done, 1 refused (no such service, user or connection;
a disabled user), 2 usage or environment.
"""

from __future__ import annotations

import argparse
import sys

from agentguard._model import ConnectedAccount
from agentguard.asgi._operator_connections import LinkIssuer, _LinkRefused, connection_document
from agentguard.cli._approvals import login_name, printable
from agentguard.cli._errors import CommandError, CommandRefused
from agentguard.cli._operator import Access, Operator, run_command
from agentguard.cli._output import emit_json
from agentguard.config import Settings
from agentguard.connect._vendor import VendorClient
from agentguard.gateway._connect import connect_flows, connected_accounts, vendor_clients

__all__ = ["run"]


def _name(args: argparse.Namespace) -> str:
    name: str = args.operator_name if args.operator_name is not None else login_name()
    if not 0 < len(name) <= 128 or not name.isprintable():
        raise CommandError("--as is 1 to 128 printable characters")
    return name


def _settings(operator: Operator) -> Settings:
    """The settings (connected services are configured there)."""
    settings = operator.settings
    if settings is None:
        raise CommandError(
            "no settings file: connected services are configured there; pass --config or set "
            "AGENTGUARD_CONFIG"
        )
    return settings


def _line(record: ConnectedAccount) -> str:
    expires = record.expires_at.isoformat() if record.expires_at is not None else "never"
    text = (
        f"{record.service}  {record.user_id}  {record.status.value:<6}  "
        f"scopes {' '.join(record.scopes) or '-'}  expires {expires}  "
        f"connected {record.created_at.isoformat()}"
    )
    return printable(text)


async def _list(operator: Operator, args: argparse.Namespace) -> int:
    found: list[ConnectedAccount] = await operator.store.list_connections(
        user_id=args.user or None, service=args.service or None
    )
    if args.json:
        emit_json([connection_document(record) for record in found])
        return 0
    for record in found:
        print(_line(record))
    if not found:
        print("no connections")
    return 0


async def _link(operator: Operator, args: argparse.Namespace) -> int:
    name = _name(args)
    settings = _settings(operator)
    flows = connect_flows(
        settings, operator.store, clock=operator.audit_clock, audit=operator.audit
    )
    # a connected service always has public_origin (the settings refuse one without it);
    # the issuer refuses any other service before it builds a URL
    origin = settings.public_origin or ""
    links = LinkIssuer(flows, operator.store, settings.services, origin)
    try:
        link = await links.issue(args.service, args.user, by=name)
    except _LinkRefused as refused:
        raise CommandRefused(refused.description) from None
    expires = link.expires_at.isoformat()
    if args.json:
        emit_json(
            {
                "url": link.url.reveal(),
                "expires_at": expires,
                "service": args.service,
                "user_id": args.user,
            }
        )
    else:
        print(link.url.reveal())
    print(
        printable(
            f"one-time connect link for user {args.user} and {args.service}, expires {expires}: "
            f"a secret for {args.user}'s own human only: whoever opens it first connects "
            f"their vendor account as {args.user}; send it to that person directly"
        ),
        file=sys.stderr,
    )
    return 0


async def _disconnect(operator: Operator, args: argparse.Namespace) -> int:
    name = _name(args)
    settings = _settings(operator)
    configured = settings.service(args.service)
    revocable = configured is not None and configured.credentials == "connected"
    vendors: dict[str, VendorClient] = {}
    if revocable:
        vendors = vendor_clients(settings, clock=operator.audit_clock, only=args.service)
    accounts = connected_accounts(
        settings, operator.store, vendors, clock=operator.audit_clock, audit=operator.audit
    )
    try:
        removed = await accounts.disconnect(args.service, args.user, by=name)
    finally:
        for vendor in vendors.values():
            await vendor.aclose()
    if not removed:
        raise CommandRefused(f"user {args.user!r} has no connection to {args.service!r}")
    if not revocable:  # a service no longer configured: its leftover connection goes anyway
        warning = (
            f"warning: {args.service} is not a connected service in the settings: the "
            "connection was deleted but not revoked at the vendor"
        )
        print(printable(warning), file=sys.stderr)
    print(printable(f"disconnected {args.user} from {args.service} (by {name})"))
    return 0


def run(args: argparse.Namespace) -> int:
    """Dispatch a ``connections`` subcommand."""
    handlers = {"list": _list, "link": _link, "disconnect": _disconnect}
    access = {"list": Access.READ_ONLY}
    return run_command("connections", handlers, args, args.connections_command, access)
