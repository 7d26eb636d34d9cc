"""``agentguard credentials reseal``: re-seal v1 rows once the operator confirms their scope.

A v1 row did not bind its scope, so the stored scope may have been edited by anyone with write
access to the database (an admin credential turned ``user`` would be sent as is). The command
therefore never trusts it: each v1 row is re-sealed only with a scope the operator confirms,
by ``--confirm-admin ID`` / ``--confirm-user ID`` or, on a terminal, at a prompt. Confirming
``admin`` always applies (it narrows); confirming ``user`` for a row stored as ``admin`` is
refused. Exit codes: 0 every row is current, 1 some rows stay v1 (refused by the gateway until
confirmed), 2 usage or environment.
"""

from __future__ import annotations

import argparse
import sys

from agentguard._model import CredentialScope, StoredCredential
from agentguard.cli._errors import CommandError, CommandRefused
from agentguard.cli._operator import Operator
from agentguard.cli._output import emit_json, progress_printer
from agentguard.credentials._keyring import KeyRing
from agentguard.credentials._vault import CredentialVault, ResealReport, VaultError

__all__ = ["reseal"]

_ANSWERS = {"user": CredentialScope.USER, "admin": CredentialScope.ADMIN}


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


def _print(report: ResealReport, primary: str, as_json: bool) -> None:
    left = [c.id for c in report.unconfirmed]
    if as_json:
        emit_json(
            {
                "primary": primary,
                "rewritten": report.rewritten,
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
    _print(report, keyring.primary, args.json)
    problems: list[str] = []
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
