"""``agentguard keys``: issue (and write a credentials file), list, revoke.

The store comes from ``--store``, ``$AGENTGUARD_STORE`` or the settings file (``--config``), as
for every command, and must exist: ``list`` opens it read-only, ``issue`` and ``revoke`` never
create one. With a settings file, issued keys get its ``[keys]`` lifetimes. Exit codes: 0
success (revoking a known user's or family's keys when none is live still is: the count is 0),
1 refused (an unknown key id, family or user; a disabled user), 2 usage or environment error
(no store, a credentials file that exists or cannot be written). Keys are never printed: only
their ids and the file path. The credentials file rule is in :mod:`agentguard.cli._keys_file`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any
from urllib.parse import urlsplit

import anyio

from agentguard._audience import canonical_resource
from agentguard._clock import SystemClock
from agentguard._guard import Guard
from agentguard._home import expand_home
from agentguard._model import Grants, KeyRecord
from agentguard.cli._errors import CommandError, CommandRefused
from agentguard.cli._keys_file import precheck, write_new
from agentguard.cli._output import emit_json
from agentguard.cli._target import Access, open_target, settings_for
from agentguard.client._credentials_file import AgentCredentials, dump_credentials
from agentguard.client._errors import CredentialsFileError
from agentguard.dpop import DPoPKey
from agentguard.errors import ConfigurationError, IssuanceRefused

__all__ = ["run"]


async def _known_user(guard: Guard, user_id: str) -> None:
    if await guard.store.get_user(user_id) is None:
        raise CommandRefused(f"no user {user_id!r}")


async def _known_key(guard: Guard, key_id: str) -> None:
    # the store protocol looks keys up by hash, not id: only a revocation of nothing pays this
    if not any(key.id == key_id for key in await guard.store.list_keys()):
        raise CommandRefused(f"no key {key_id!r}")


async def _with_guard(args: argparse.Namespace, access: Access, action: Any) -> Any:
    settings = settings_for(args)
    options: dict[str, Any] = {}
    if settings is not None:
        options = {
            "access_ttl": settings.access_ttl(),
            "refresh_ttl": settings.refresh_ttl(),
            "instance": settings.audit.instance,
        }
    async with open_target(args, access, settings) as (store, _):
        return await action(Guard(store, **options))


def _issue(args: argparse.Namespace) -> int:
    try:
        out = expand_home(args.out)
    except ValueError as error:
        raise CommandError(f"--out: {error}") from None
    for name, url in (("--token-url", args.token_url), ("--resource-url", args.resource_url)):
        parts = urlsplit(url) if url is not None else None
        if parts is not None and (parts.scheme not in ("http", "https") or not parts.netloc):
            raise CommandError(f"{name} must be an http(s) URL, e.g. https://api.example.com")
    if args.audience is not None:
        try:
            canonical_resource(args.audience)
        except ValueError:
            raise CommandError(
                "--audience must be an http(s) URL without query or fragment, "
                "e.g. https://api.example.com/mcp"
            ) from None
    resource_url = args.resource_url if args.resource_url is not None else args.audience
    if (out.exists() or out.is_symlink()) and not args.force:
        raise CommandError(f"{out} exists; pass --force to replace it")
    precheck(out)
    scope = Grants.from_scope(args.scope) if args.scope is not None else None
    dpop_key = None if args.bearer else DPoPKey.generate(args.alg)

    async def issue(guard: Guard) -> tuple[Any, AgentCredentials]:
        jkt = dpop_key.thumbprint if dpop_key is not None else None
        issued = await guard.issuer.issue(
            args.user, args.workspace, scope=scope, jkt=jkt, audience=args.audience
        )
        credentials = AgentCredentials(
            access_key=issued.access_key,
            refresh_key=issued.refresh_key,
            issued_at=issued.access.created_at,
            expires_at=issued.access.expires_at,
            token_url=args.token_url,
            token_type="DPoP" if dpop_key is not None else "Bearer",
            dpop_key=dpop_key,
            resource_url=resource_url,
        )
        try:
            write_new(out, dump_credentials(credentials), overwrite=args.force)
        except CredentialsFileError:
            # keys nobody holds are only a liability
            await guard.issuer.revoke(family_id=issued.access.family_id, reason="not_delivered")
            raise
        return issued, credentials

    issued, credentials = anyio.run(_with_guard, args, Access.EXISTING, issue)
    binding = (
        f"DPoP-bound ({credentials.dpop_key.thumbprint})" if credentials.dpop_key else "Bearer"
    )
    print(f"access key id:  {issued.access.id}")
    print(f"refresh key id: {issued.refresh.id}")
    print(f"family id:      {issued.access.family_id}")
    print(f"binding:        {binding}")
    print(f"audience:       {issued.access.audience or 'any resource'}")
    print(f"expires:        {issued.access.expires_at.isoformat()}")
    print(f"wrote {out} (mode 0600)")
    return 0


def _state(key: KeyRecord) -> str:
    if key.revoked:
        return f"revoked ({key.revoked_reason})" if key.revoked_reason else "revoked"
    if key.used_at is not None:
        return "used"
    if key.expired(SystemClock().now()):
        return "expired"
    return "active"


def _list(args: argparse.Namespace) -> int:
    async def keys(guard: Guard) -> list[KeyRecord]:
        await _known_user(guard, args.user)
        found: list[KeyRecord] = await guard.store.list_keys(user_id=args.user)
        return found

    records = anyio.run(_with_guard, args, Access.READ_ONLY, keys)
    rows = [
        {
            "id": key.id,
            "kind": key.kind.value,
            "family_id": key.family_id,
            "workspace_id": key.workspace_id,
            "created_at": key.created_at.isoformat(),
            "expires_at": key.expires_at.isoformat(),
            "state": _state(key),
            "dpop_bound": key.jkt is not None,
            "audience": key.audience,
        }
        for key in records
    ]
    if args.json:
        emit_json(rows)
        return 0
    for row in rows:
        bound = "dpop" if row["dpop_bound"] else "bearer"
        audience = f"  for {row['audience']}" if row["audience"] else ""
        print(
            f"{row['id']}  {row['kind']:<7}  {row['family_id']}  {bound:<6}  "
            f"expires {row['expires_at']}  {row['state']}{audience}"
        )
    if not rows:
        print(f"no keys for {args.user}")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    async def revoke(guard: Guard) -> int:
        if args.user is not None:
            await _known_user(guard, args.user)
        if args.family is not None and not await guard.store.list_keys(family_id=args.family):
            raise CommandRefused(f"no key family {args.family!r}")
        count: int = await guard.issuer.revoke(
            key_id=args.key_id, family_id=args.family, user_id=args.user, reason=args.reason
        )
        if count == 0 and args.key_id is not None:
            await _known_key(guard, args.key_id)  # unknown, or revoked already
        return count

    count = anyio.run(_with_guard, args, Access.EXISTING, revoke)
    print(f"revoked {count} key{'s' if count != 1 else ''}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Dispatch a ``keys`` subcommand."""
    handlers = {"issue": _issue, "list": _list, "revoke": _revoke}
    try:
        return handlers[args.keys_command](args)
    except (IssuanceRefused, CommandRefused) as error:
        print(f"agentguard keys: {error}", file=sys.stderr)
        return 1
    except (CommandError, ConfigurationError, CredentialsFileError, OSError, ValueError) as error:
        print(f"agentguard keys: {error}", file=sys.stderr)
        return 2
