"""``agentguard users``: add, disable, enable, grant, revoke-grant, list.

Grants are written as everywhere else (``--grants``, ``keys issue --scope``, OAuth scopes):
``service:level``, e.g. ``agentguard users grant alice crm:write projects:read``; the older
``users grant alice crm write`` is still accepted. Disabling, enabling and every grant change
append an audit event (``user.disable``, ``user.enable``, ``grant.change``). Exit codes: 0
done, 1 refused (unknown user or account), 2 usage or environment.
"""

from __future__ import annotations

import argparse

from agentguard._keys._issuer import KeyIssuer
from agentguard._model import Grants, Level, User
from agentguard.audit._events import Action
from agentguard.cli._errors import CommandError, CommandRefused
from agentguard.cli._operator import Access, Operator, run_command
from agentguard.cli._output import emit_json

__all__ = ["parse_grants", "run", "user_or_refuse"]


def parse_grants(tokens: list[str]) -> list[tuple[str, Level]]:
    """``crm:read projects:write`` (one or more, spaces or commas); also ``crm read``."""
    words = [word for token in tokens for word in token.replace(",", " ").split()]
    if len(words) == 2 and ":" not in words[0] and ":" not in words[1]:
        words = [f"{words[0]}:{words[1]}"]  # the older two-argument form
    if not words or any(":" not in word for word in words):
        raise CommandError("a grant is service:level, e.g. crm:read or crm:write")
    parsed: list[tuple[str, Level]] = []
    for word in words:
        service, _, level = word.partition(":")
        Grants.from_scope(f"{service}:read")  # the service name's rules, as in scopes
        parsed.append((service, Level.parse(level)))
    return parsed


async def user_or_refuse(operator: Operator, user_id: str) -> User:
    """The user, or :class:`CommandRefused` naming the unknown id."""
    user: User | None = await operator.store.get_user(user_id)
    if user is None:
        raise CommandRefused(f"no user {user_id!r}")
    return user


def _row(user: User) -> dict[str, object]:
    return {
        "id": user.id,
        "account_id": user.account_id,
        "name": user.name,
        "enabled": user.enabled,
        "grants": user.grants.to_dict(),
    }


async def _add(operator: Operator, args: argparse.Namespace) -> int:
    store = operator.store
    if await store.get_account(args.account) is None:
        raise CommandRefused(
            f"no account {args.account!r}; create it with: agentguard accounts add {args.account}"
        )
    if await store.get_user(args.user) is not None:
        raise CommandRefused(f"user {args.user!r} exists")
    for workspace_id in args.workspace:
        workspace = await store.get_workspace(workspace_id)
        if workspace is None or workspace.account_id != args.account:
            raise CommandRefused(f"no workspace {workspace_id!r} in account {args.account!r}")
    user = User(
        id=args.user,
        account_id=args.account,
        name=args.name or args.user,
        grants=Grants(dict(parse_grants(args.grants))) if args.grants else Grants(),
    )
    await store.put_user(user)
    for workspace_id in args.workspace:
        await store.set_membership(user.id, workspace_id, member=True)
    if user.grants:
        await operator.record(
            Action.GRANT_CHANGE,
            user_id=user.id,
            account_id=user.account_id,
            detail={"grants": user.grants.to_scope()},
        )
    if args.json:
        emit_json({**_row(user), "workspaces": list(args.workspace)})
    else:
        print(f"added user {user.id} to account {user.account_id}")
    return 0


async def _set_enabled(operator: Operator, args: argparse.Namespace, enabled: bool) -> int:
    user = await user_or_refuse(operator, args.user)
    revoked = 0
    if user.enabled != enabled:
        await operator.store.put_user(user.model_copy(update={"enabled": enabled}))
        await operator.record(
            Action.USER_ENABLE if enabled else Action.USER_DISABLE,
            user_id=user.id,
            account_id=user.account_id,
            reason=args.reason or None,
        )
    if not enabled and args.revoke_keys:
        issuer = KeyIssuer(operator.store, clock=operator.audit_clock, audit=operator.audit)
        revoked = await issuer.revoke(user_id=user.id, reason="user_disabled")
    state = "enabled" if enabled else "disabled"
    extra = f"; revoked {revoked} keys" if revoked else ""
    print(f"user {user.id} {state}{extra}")
    return 0


async def _disable(operator: Operator, args: argparse.Namespace) -> int:
    return await _set_enabled(operator, args, enabled=False)


async def _enable(operator: Operator, args: argparse.Namespace) -> int:
    return await _set_enabled(operator, args, enabled=True)


async def _change_grant(operator: Operator, user_id: str, service: str, level: Level) -> int:
    user = await user_or_refuse(operator, user_id)
    before = user.grants.level(service)
    grants = user.grants.with_level(service, level)
    if grants != user.grants:
        await operator.store.put_user(user.model_copy(update={"grants": grants}))
        await operator.record(
            Action.GRANT_CHANGE,
            user_id=user.id,
            account_id=user.account_id,
            service=service,
            detail={"from": before.label, "to": level.label, "grants": grants.to_scope()},
        )
    print(f"user {user.id}: {service} {before.label} -> {level.label}")
    return 0


async def _grant(operator: Operator, args: argparse.Namespace) -> int:
    for service, level in parse_grants(args.grants):
        await _change_grant(operator, args.user, service, level)
    return 0


async def _revoke_grant(operator: Operator, args: argparse.Namespace) -> int:
    for service in args.services:
        await _change_grant(operator, args.user, service.partition(":")[0], Level.NONE)
    return 0


async def _list(operator: Operator, args: argparse.Namespace) -> int:
    users: list[User] = await operator.store.list_users(args.account)
    if args.json:
        emit_json([_row(user) for user in users])
        return 0
    for user in users:
        state = "enabled " if user.enabled else "disabled"
        print(f"{user.id}  {user.account_id}  {state}  {user.grants.to_scope() or '-'}")
    if not users:
        print("no users")
    return 0


def run(args: argparse.Namespace) -> int:
    """Dispatch a ``users`` subcommand."""
    handlers = {
        "add": _add,
        "disable": _disable,
        "enable": _enable,
        "grant": _grant,
        "revoke-grant": _revoke_grant,
        "list": _list,
    }
    access = {"list": Access.READ_ONLY}
    return run_command("users", handlers, args, args.users_command, access)
