"""``agentguard credentials``: set, list, rotate-kek, reseal. No plaintext is ever printed.

``rotate-kek`` and ``reseal`` move the users' connected accounts under the primary key too: a
connection that does not open is named and the command exits 1, so the old key is not dropped
while something still needs it.

``set`` reads the secret from stdin (when it is not a terminal) or from a prompt without echo,
never from the command line, where it would land in shell history and ``ps``. Exit codes: 0
done, 1 refused (unknown user, account or service; empty credential), 2 usage or environment
(no key-encryption key, a credential that does not decrypt).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path

from agentguard._model import CredentialOwner, CredentialScope, StoredCredential
from agentguard._secret import Secret
from agentguard.cli._credentials_reseal import connection_problems, reseal, reseal_connections
from agentguard.cli._errors import CommandError, CommandRefused
from agentguard.cli._kek_file import write_kek
from agentguard.cli._operator import Access, Operator, run_command
from agentguard.cli._output import emit_json, progress_printer
from agentguard.cli._users import user_or_refuse
from agentguard.config import NO_KEK
from agentguard.credentials import CredentialVault, KeyRing, VaultError
from agentguard.credentials._sealing import seal_version

__all__ = ["run"]


def _keyring(operator: Operator) -> KeyRing:
    if operator.settings is not None:
        return operator.settings.keyring()
    if not os.environ.get("AGENTGUARD_KEK"):
        raise CommandError(NO_KEK)
    return KeyRing.from_env()


def _keygen(args: argparse.Namespace) -> int:
    out: Path = args.out
    if not out.parent.is_dir():
        print(f"agentguard credentials: no directory {out.parent}", file=sys.stderr)
        return 2
    try:
        write_kek(out, args.id)
    except FileExistsError:
        print(
            f"agentguard credentials: {out} exists; refusing to overwrite a key-encryption key",
            file=sys.stderr,
        )
        return 2
    except OSError as error:
        print(f"agentguard credentials: cannot write {out}: {error.strerror}", file=sys.stderr)
        return 2
    print(f"wrote a new key-encryption key {args.id} to {out} (mode 0600); back it up")
    print(f'use it: kek_file = "{out}" under [secrets] in the settings file')
    return 0


def _read_secret() -> Secret:
    prompt = sys.stdin.isatty()
    text = (getpass.getpass("credential (not echoed): ") if prompt else sys.stdin.read()).strip()
    if not text:
        raise CommandRefused("no credential on stdin")
    return Secret(text)


async def _set(operator: Operator, args: argparse.Namespace) -> int:
    settings = operator.settings
    if settings is not None and settings.services and settings.service(args.service) is None:
        raise CommandRefused(f"no service {args.service!r} in the settings")
    if args.user is not None:
        user = await user_or_refuse(operator, args.user)
        owner_kind, owner_id = CredentialOwner.USER, user.id
    else:
        if await operator.store.get_account(args.account) is None:
            raise CommandRefused(f"no account {args.account!r}")
        owner_kind, owner_id = CredentialOwner.ACCOUNT, args.account
    scope_name = args.scope or ("user" if args.user is not None else "admin")
    vault = CredentialVault(operator.store, _keyring(operator), audit=operator.audit)
    secret = _read_secret()
    stored = await vault.put(
        args.service, owner_kind, owner_id, secret, scope=CredentialScope(scope_name)
    )
    print(
        f"stored {stored.scope.value}-scoped credential {stored.id} for {args.service} "
        f"({owner_kind.value} {owner_id}) under key {stored.key_id}"
    )
    return 0


def _row(credential: StoredCredential) -> dict[str, str]:
    return {
        "id": credential.id,
        "service": credential.service,
        "owner_kind": credential.owner_kind.value,
        "owner_id": credential.owner_id,
        "scope": credential.scope.value,
        "kek": credential.key_id,
        "seal": f"v{seal_version(credential.ciphertext) or '?'}",
        "created_at": credential.created_at.isoformat(),
    }


async def _list(operator: Operator, args: argparse.Namespace) -> int:
    found: list[StoredCredential] = await operator.store.list_credentials(args.service)
    rows = [_row(credential) for credential in found]
    if args.json:
        emit_json(rows)
        return 0
    for row in rows:
        print(
            f"{row['id']}  {row['service']}  {row['owner_kind']}:{row['owner_id']}  "
            f"{row['scope']}  kek={row['kek']}  seal={row['seal']}  {row['created_at']}"
        )
    if not rows:
        print("no credentials")
    return 0


async def _rotate_kek(operator: Operator, args: argparse.Namespace) -> int:
    keyring = _keyring(operator)
    vault = CredentialVault(operator.store, keyring, audit=operator.audit)
    show = progress_printer("re-encrypted", sys.stderr.isatty())
    try:
        report = await vault.reseal({}, progress=show)
    except VaultError as error:
        raise CommandError(f"{error}; is the old key still in AGENTGUARD_KEK?") from None
    count = report.rewritten
    if show is not None:
        print(file=sys.stderr)
    connections = await reseal_connections(operator, keyring)
    if report.unconfirmed:
        print(
            f"warning: {len(report.unconfirmed)} credentials are in seal format v1 and refused "
            "by the gateway until 'agentguard credentials reseal' confirms their scope",
            file=sys.stderr,
        )
    if args.json:
        emit_json(
            {
                "reencrypted": count,
                "connections": connections.rewritten,
                "primary": keyring.primary,
            }
        )
    else:
        print(
            f"re-encrypted {count} credentials and {connections.rewritten} connections "
            f"under {keyring.primary}"
        )
    problems = connection_problems(connections)
    if problems:
        raise CommandRefused("; ".join(problems))
    return 0


async def _reseal(operator: Operator, args: argparse.Namespace) -> int:
    return await reseal(operator, args, _keyring(operator))


def run(args: argparse.Namespace) -> int:
    """Dispatch a ``credentials`` subcommand."""
    if args.credentials_command == "keygen":  # needs no store
        return _keygen(args)
    handlers = {"set": _set, "list": _list, "rotate-kek": _rotate_kek, "reseal": _reseal}
    access = {"list": Access.READ_ONLY}
    return run_command("credentials", handlers, args, args.credentials_command, access)
