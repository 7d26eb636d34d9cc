"""``agentguard credentials reseal``: re-seal v1 rows once the operator confirms their scope.

A v1 row did not bind its scope, so the stored scope may have been edited by anyone with write
access to the database (an admin credential turned ``user`` would be sent as is). The command
therefore never trusts it: each v1 row is re-sealed only with a scope the operator confirms,
by ``--confirm-admin ID`` / ``--confirm-user ID`` or, on a terminal, at a prompt. Confirming
``admin`` always applies (it narrows); confirming ``user`` for a row stored as ``admin`` is
refused. Every user's connected account is moved under the primary key too
(:func:`reseal_connections`, which ``rotate-kek`` also runs). Exit codes: 0 every row is
current, 1 some rows stay v1 (refused by the gateway until confirmed) or some connections do
not open, 2 usage or environment.
"""

from __future__ import annotations

import argparse
import sys

from agentguard._model import CredentialScope, StoredCredential
from agentguard.cli._errors import CommandError, CommandRefused
from agentguard.cli._operator import Operator
from agentguard.cli._output import emit_json, progress_printer
from agentguard.connect import ConnectedAccounts
from agentguard.connect._rekey import ConnectionsResealed
from agentguard.credentials._keyring import KeyRing
from agentguard.credentials._vault import CredentialVault, ResealReport, VaultError
from agentguard.storage import ConnectionStore

__all__ = ["connection_problems", "reseal", "reseal_connections"]

_ANSWERS = {"user": CredentialScope.USER, "admin": CredentialScope.ADMIN}


async def reseal_connections(operator: Operator, keyring: KeyRing) -> ConnectionsResealed:
    """Move every connected account under the primary key (nothing to do for a store that
    keeps no connections); progress on a terminal's stderr."""
    keeps_connections = isinstance(operator.store, ConnectionStore)
    if not keeps_connections:
        return ConnectionsResealed()
    accounts = ConnectedAccounts(
        operator.store, keyring, {}, clock=operator.audit_clock, audit=operator.audit
    )
    show = progress_printer("connections re-encrypted", sys.stderr.isatty())
    report = await accounts.reseal(progress=show)
    if show is not None and report.rewritten:
        print(file=sys.stderr)
    return report


def connection_problems(report: ConnectionsResealed) -> list[str]:
    """Why the old key must not be dropped yet, one sentence per kind of connection left."""
    problems: list[str] = []
    if report.unopenable:
        problems.append(
            f"connections that do not open with the configured keys, left as they are: "
            f"{', '.join(report.unopenable)} (keep the old key in AGENTGUARD_KEK and run it "
            "again, or have their users reconnect)"
        )
    if report.busy:
        problems.append(
            f"connections that kept changing, not re-encrypted: {', '.join(report.busy)} "
            "(run it again)"
        )
    return problems


def _flags(args: argparse.Namespace) -> dict[str, CredentialScope]:
    admins: list[str] = args.confirm_admin or []
    users: list[str] = args.confirm_user or []
    both = sorted(set(admins) & set(users))
    if both:
        raise CommandError(f"confirmed as both admin and user: {', '.join(both)}")
    confirmed = dict.fromkeys(users, CredentialScope.USER)
    confirmed.update(dict.fromkeys(admins, CredentialScope.ADMIN))
    return confirmed


def _ask(credential: StoredCredential) -> CredentialScope | None:
    print(
        f"{credential.id}  {credential.service}  "
        f"{credential.owner_kind.value}:{credential.owner_id}  "
        f"stored scope {credential.scope.value} (not verifiable in format v1)",
        file=sys.stderr,
    )
    while True:
        try:
            answer = input("confirm its scope [user/admin/skip]: ").strip().lower()
        except EOFError:
            return None
        if answer in ("", "skip"):
            return None
        if answer in _ANSWERS:
            return _ANSWERS[answer]


def _print(
    report: ResealReport, connections: ConnectionsResealed, primary: str, as_json: bool
) -> None:
    left = [c.id for c in report.unconfirmed]
    if as_json:
        emit_json(
            {
                "primary": primary,
                "rewritten": report.rewritten,
                "connections": connections.rewritten,
                "resealed": {cid: scope.value for cid, scope in report.resealed.items()},
                "narrowed": report.narrowed,
                "refused": report.refused,
                "unconfirmed": left,
            }
        )
        return
    for cid, scope in report.resealed.items():
        print(f"resealed {cid} as {scope.value}-scoped under {primary}")
    for cid in report.narrowed:
        print(f"warning: {cid} was stored as user-scoped; now admin-scoped as confirmed")
    print(f"{report.rewritten} rows written; {len(left)} still in format v1")
    print(f"{connections.rewritten} connections re-encrypted under {primary}")


async def reseal(operator: Operator, args: argparse.Namespace, keyring: KeyRing) -> int:
    """Run ``credentials reseal``."""
    vault = CredentialVault(operator.store, keyring, audit=operator.audit)
    confirmed = _flags(args)
    known = {c.id: c for c in await operator.store.list_credentials()}
    unknown = sorted(set(confirmed) - set(known))
    if unknown:
        raise CommandRefused(f"no stored credential {', '.join(unknown)}")
    if sys.stdin.isatty() and not args.no_input:
        for credential in await vault.legacy():
            if credential.id not in confirmed:
                answer = _ask(credential)
                if answer is not None:
                    confirmed[credential.id] = answer
    show = progress_printer("written", sys.stderr.isatty())
    try:
        report = await vault.reseal(confirmed, progress=show)
    except VaultError as error:
        raise CommandError(f"{error}; is the old key still in AGENTGUARD_KEK?") from None
    if show is not None:
        print(file=sys.stderr)
    connections = await reseal_connections(operator, keyring)
    _print(report, connections, keyring.primary, args.json)
    problems = connection_problems(connections)
    if report.refused:
        problems.append(
            f"stored as admin-scoped, not re-sealed as user-scoped: {', '.join(report.refused)} "
            "(set the credential again to change its scope)"
        )
    unconfirmed = [c.id for c in report.unconfirmed if c.id not in report.refused]
    if unconfirmed:
        problems.append(
            f"format v1, refused by the gateway until their scope is confirmed: "
            f"{', '.join(unconfirmed)} (--confirm-admin ID or --confirm-user ID)"
        )
    if problems:
        raise CommandRefused("; ".join(problems))
    return 0
