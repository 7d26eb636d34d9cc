"""``agentguard workspaces``: add, add-member, remove-member.

Removing a member appends a ``membership.remove`` audit event. Exit codes: 0 done, 1 refused
(unknown workspace, account or user; a user of another account; not a member), 2 usage or
environment.
"""

from __future__ import annotations

import argparse

from agentguard._model import Workspace
from agentguard.audit._events import Action
from agentguard.cli._errors import CommandRefused
from agentguard.cli._operator import Operator, run_command
from agentguard.cli._output import emit_json
from agentguard.cli._users import user_or_refuse

__all__ = ["run"]


async def _workspace_or_refuse(operator: Operator, workspace_id: str) -> Workspace:
    workspace: Workspace | None = await operator.store.get_workspace(workspace_id)
    if workspace is None:
        raise CommandRefused(f"no workspace {workspace_id!r}")
    return workspace


async def _add(operator: Operator, args: argparse.Namespace) -> int:
    if await operator.store.get_account(args.account) is None:
        raise CommandRefused(f"no account {args.account!r}")
    if await operator.store.get_workspace(args.workspace) is not None:
        raise CommandRefused(f"workspace {args.workspace!r} exists")
    workspace = Workspace(id=args.workspace, account_id=args.account, name=args.name)
    await operator.store.put_workspace(workspace)
    if args.json:
        emit_json(workspace.model_dump(mode="json"))
    else:
        print(f"added workspace {workspace.id} to account {workspace.account_id}")
    return 0


async def _add_member(operator: Operator, args: argparse.Namespace) -> int:
    workspace = await _workspace_or_refuse(operator, args.workspace)
    user = await user_or_refuse(operator, args.user)
    if user.account_id != workspace.account_id:
        raise CommandRefused(f"user {user.id!r} belongs to another account than {workspace.id!r}")
    await operator.store.set_membership(user.id, workspace.id, member=True)
    print(f"{user.id} is a member of {workspace.id}")
    return 0


async def _remove_member(operator: Operator, args: argparse.Namespace) -> int:
    workspace = await _workspace_or_refuse(operator, args.workspace)
    user = await user_or_refuse(operator, args.user)
    if not await operator.store.is_member(user.id, workspace.id):
        raise CommandRefused(f"{user.id!r} is not a member of {workspace.id!r}")
    await operator.store.set_membership(user.id, workspace.id, member=False)
    await operator.record(
        Action.MEMBERSHIP_REMOVE,
        user_id=user.id,
        workspace_id=workspace.id,
        account_id=workspace.account_id,
        reason=args.reason or None,
    )
    print(f"removed {user.id} from {workspace.id}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Dispatch a ``workspaces`` subcommand."""
    handlers = {"add": _add, "add-member": _add_member, "remove-member": _remove_member}
    return run_command("workspaces", handlers, args, args.workspaces_command)
