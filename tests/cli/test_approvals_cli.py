"""``agentguard operators`` and ``agentguard approvals`` on a SQLite store file, through the real
CLI entry: tokens shown once and stored hashed, decisions audited with the operator's name,
refusals one line with exit code 1, usage errors exit code 2."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from agentguard._clock import SystemClock
from agentguard._model import ApprovalRecord
from agentguard.approvals._operators import OPERATOR_PREFIX, authenticate_operator
from agentguard.storage import SQLiteStore
from tests.cli.conftest import RunCLI
from tests.support.approval_records import held_call


@pytest.fixture
def ready(cli: RunCLI) -> RunCLI:
    assert cli("init", "--no-kek").code == 0
    return cli


def _store(work: Path) -> SQLiteStore:
    return SQLiteStore(work / "agentguard.db")


def _hold(work: Path, **options: Any) -> ApprovalRecord:
    async def create() -> ApprovalRecord:
        async with _store(work) as store:
            now = SystemClock().now()
            stored: ApprovalRecord = await store.create_approval(held_call(now, **options), now=now)
            return stored

    return anyio.run(create)


def _events(work: Path) -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        async with _store(work) as store:
            return [entry.event() for entry in await store.read()]

    return anyio.run(read)


def _approval(work: Path, approval_id: str) -> ApprovalRecord | None:
    async def get() -> ApprovalRecord | None:
        async with _store(work) as store:
            found: ApprovalRecord | None = await store.get_approval(approval_id)
            return found

    return anyio.run(get)


def test_issue_prints_the_token_once_and_stores_only_its_hash(
    ready: RunCLI, clean_env: Path
) -> None:
    result = ready("operators", "issue", "--name", "alice", "--ttl", "3600")
    assert result.code == 0, result.err
    token = result.out.strip()
    assert result.out == token + "\n" and token.startswith(OPERATOR_PREFIX)
    assert "shown once" in result.err and token not in result.err

    async def check() -> tuple[str, bytes]:
        async with _store(clean_env) as store:
            record = await authenticate_operator(store, token, now=SystemClock().now())
            return record.name, record.token_hash

    name, token_hash = anyio.run(check)
    assert name == "alice" and token_hash == hashlib.sha256(token.encode()).digest()
    assert token.encode() not in (clean_env / "agentguard.db").read_bytes()
    [event] = _events(clean_env)
    assert event["action"] == "operator.issue"
    assert event["detail"]["operator_name"] == "alice" and event["detail"]["via"] == "cli"
    assert token not in json.dumps(event)

    listing = ready("operators", "list")
    assert listing.code == 0 and "alice" in listing.out and "active" in listing.out
    assert token not in listing.out
    rows = json.loads(ready("operators", "list", "--json").out)
    assert [row["name"] for row in rows] == ["alice"] and "token" not in rows[0]
    assert rows[0]["expires_at"] is not None


def test_issue_json_carries_the_token(ready: RunCLI) -> None:
    result = ready("operators", "issue", "--name", "ci", "--json")
    document = json.loads(result.out)
    assert document["token"].startswith(OPERATOR_PREFIX) and document["state"] == "active"
    assert document["expires_at"] is None and document["name"] == "ci"


def test_revoke_is_audited_and_refused_the_second_time(ready: RunCLI, clean_env: Path) -> None:
    issued = json.loads(ready("operators", "issue", "--name", "ci", "--json").out)
    result = ready("operators", "revoke", issued["id"])
    assert result.code == 0 and result.out == f"revoked operator token {issued['id']} (ci)\n"
    again = ready("operators", "revoke", issued["id"])
    assert again.one_line_error(1) == (
        f"agentguard operators: operator token {issued['id']!r} was revoked already"
    )
    unknown = ready("operators", "revoke", "op_nothing")
    assert unknown.one_line_error(1) == "agentguard operators: no operator token 'op_nothing'"
    assert [e["action"] for e in _events(clean_env)] == ["operator.issue", "operator.revoke"]
    assert json.loads(ready("operators", "list", "--json").out)[0]["state"] == "revoked"

    async def refused() -> str:
        async with _store(clean_env) as store:
            try:
                await authenticate_operator(store, issued["token"], now=SystemClock().now())
            except Exception as error:
                return type(error).__name__
        return "accepted"

    assert anyio.run(refused) == "InvalidToken"


@pytest.mark.parametrize(
    "argv",
    [
        ("operators", "issue", "--name", "ci", "--ttl", "0"),
        ("operators", "issue", "--name", " "),
        ("operators", "issue", "--name", "x" * 129),
        ("approvals", "list", "--limit", "0"),
        ("approvals", "approve", "apr_x", "--as", "x" * 129),
    ],
)
def test_usage_errors_exit_2(ready: RunCLI, argv: tuple[str, ...]) -> None:
    ready(*argv).one_line_error(2)


def test_commands_need_an_existing_store(cli: RunCLI, clean_env: Path) -> None:
    for argv in (("operators", "issue", "--name", "ci"), ("approvals", "list")):
        line = cli(*argv).one_line_error(2)
        assert "no usable agentguard store" in line
    assert not (clean_env / "agentguard.db").exists()


def test_list_and_show(ready: RunCLI, clean_env: Path) -> None:
    old = _hold(clean_env, ttl=timedelta(minutes=1), age=timedelta(minutes=5))
    alice = _hold(clean_env, body=b'{"amount": 100}\x1b[2J')
    bob = _hold(clean_env, user_id="bob")
    text = ready("approvals", "list")
    assert text.code == 0
    lines = text.out.splitlines()
    assert [line.split()[0] for line in lines] == [bob.id, alice.id, old.id]
    assert lines[2].split()[1] == "expired" and lines[0].split()[1] == "pending"
    pending = json.loads(ready("approvals", "list", "--status", "pending", "--json").out)
    assert [d["id"] for d in pending] == [bob.id, alice.id]
    mine = json.loads(ready("approvals", "list", "--user", "alice", "--json").out)
    assert [d["id"] for d in mine] == [alice.id, old.id]
    expired = json.loads(ready("approvals", "list", "--status", "expired", "--json").out)
    assert [d["id"] for d in expired] == [old.id]
    assert ready("approvals", "list", "--status", "denied").out == "no approvals\n"

    shown = ready("approvals", "show", alice.id)
    assert shown.code == 0 and f"approval {alice.id}" in shown.out
    assert "POST" in shown.out and "/crm/contacts" in shown.out
    assert '{"amount": 100}\\x1b[2J' in shown.out and "\x1b" not in shown.out
    document = json.loads(ready("approvals", "show", alice.id, "--json").out)
    assert document["id"] == alice.id and document["body_preview"].endswith("\x1b[2J")
    missing = ready("approvals", "show", "apr_missing")
    assert missing.one_line_error(1) == "agentguard approvals: no approval 'apr_missing'"


def test_approve_and_deny_record_who_decided(
    ready: RunCLI, clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _hold(clean_env)
    second = _hold(clean_env)
    approved = ready("approvals", "approve", first.id, "--as", "carol")
    assert approved.code == 0, approved.err
    assert approved.out.startswith(f"approved {first.id}: POST /crm/contacts for alice (by carol)")
    monkeypatch.setattr("getpass.getuser", lambda: "dave")
    denied = json.loads(ready("approvals", "deny", second.id, "--json").out)
    assert denied["state"] == "denied" and denied["decided_by"] == "dave"
    stored = _approval(clean_env, first.id)
    assert stored is not None and stored.status.value == "approved"
    assert stored.decided_by == "carol"
    events = [e for e in _events(clean_env) if e["action"] == "approval.decide"]
    assert [(e["decision"], e["detail"]["operator"], e["detail"]["via"]) for e in events] == [
        ("allow", "carol", "cli"),
        ("deny", "dave", "cli"),
    ]
    assert all(e["detail"]["approval_id"] in (first.id, second.id) for e in events)

    again = ready("approvals", "deny", first.id)
    assert again.one_line_error(1) == (
        f"agentguard approvals: approval {first.id!r} was approved already"
    )
    unknown = ready("approvals", "approve", "apr_missing")
    assert unknown.one_line_error(1) == "agentguard approvals: no approval 'apr_missing'"


def test_an_expired_approval_cannot_be_approved(ready: RunCLI, clean_env: Path) -> None:
    old = _hold(clean_env, ttl=timedelta(minutes=1), age=timedelta(minutes=5))
    result = ready("approvals", "approve", old.id)
    assert result.one_line_error(1) == (
        f"agentguard approvals: approval {old.id!r} expired before it was decided"
    )
    stored = _approval(clean_env, old.id)
    assert stored is not None and stored.status.value == "pending"


def test_every_new_command_has_help(cli: RunCLI) -> None:
    for argv in (
        ("approvals", "list"), ("approvals", "show"), ("approvals", "approve"),
        ("approvals", "deny"), ("operators", "issue"), ("operators", "list"),
        ("operators", "revoke"),
    ):  # fmt: skip
        result = cli(*argv, "--help")
        assert result.code == 0 and "usage: agentguard" in result.out
