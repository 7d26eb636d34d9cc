"""The MCP Inspector CLI (npm ``@modelcontextprotocol/inspector`` v2, ``--cli``) through the guard.

The Inspector is the client people debug MCP servers with. Here it lists the conformance server's
tools, prompts, resources and templates and calls tools with the conformance user's key (added by
``preload.cjs``, so the key is never on a command line), is refused a tool its user has no grant
for, and without a key gets the guard's 401.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.mcp_conformance.harness import CALLED_TOOLS, PRELOAD, Served, audit_events, serve
from tests.mcp_conformance.server import RESTRICTED_TOOL
from tests.support import mcp_conformance as tools


@dataclass(frozen=True)
class Answer:
    """One Inspector invocation: its exit status, its JSON result, its JSON error (if any)."""

    status: int
    result: dict[str, Any] | None
    error: dict[str, Any] | None


#: The tools the conformance user may call: every one the suite uses, and the listed-only one.
SCHEMA_TOOL = "json_schema_2020_12_tool"
SUITE_TOOLS = CALLED_TOOLS | {SCHEMA_TOOL}

#: The invocations, by name: (with the key?, Inspector arguments).
CALLS: dict[str, tuple[bool, tuple[str, ...]]] = {
    "tools": (True, ("--method", "tools/list")),
    "prompts": (True, ("--method", "prompts/list")),
    "resources": (True, ("--method", "resources/list")),
    "templates": (True, ("--method", "resources/templates/list")),
    "simple": (True, ("--method", "tools/call", "--tool-name", "test_simple_text")),
    "with_args": (
        True,
        (
            "--method",
            "tools/call",
            "--tool-name",
            "json_schema_2020_12_tool",
            "--tool-arg",
            "name=Ada",
        ),
    ),
    "refused": (True, ("--method", "tools/call", "--tool-name", RESTRICTED_TOOL)),
    "no_key": (False, ("--stored-auth-only", "--method", "tools/list")),
}


def _json(text: str) -> dict[str, Any] | None:
    text = text.strip()
    if not text:
        return None
    parsed: dict[str, Any] = json.loads(text.splitlines()[-1] if text[0] != "{" else text)
    return parsed


def _inspect(served: Served, home: Path, with_key: bool, args: tuple[str, ...]) -> Answer:
    env = tools.node_env(home, preload=PRELOAD, extra=served.client_env(with_key=with_key))
    done = tools.run(tools.inspector_command(served.url, *args), env, cwd=home, timeout=60)
    if served.access_key in done.stdout + done.stderr:
        raise AssertionError(f"the Inspector printed the key ({args})")
    error = _json(done.stderr)
    return Answer(done.returncode, _json(done.stdout), error["error"] if error else None)


@dataclass(frozen=True)
class Session:
    answers: dict[str, Answer]
    events: list[dict[str, Any]]


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Session:
    tools.tools_prefix()  # install (or skip / fail) before the server starts
    home = tmp_path_factory.mktemp("inspector")
    # Two at a time: each run is mostly Node starting up.
    with serve("bearer") as served, ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(_inspect, served, home, *call) for name, call in CALLS.items()}
        answers = {name: future.result() for name, future in futures.items()}
    return Session(answers, audit_events(served.store))


def _names(answer: Answer, field: str, key: str = "name") -> set[str]:
    assert answer.status == 0, answer
    assert answer.result is not None
    return {item[key] for item in answer.result[field]}


def test_inspector_lists_tools_prompts_resources_and_templates(session: Session) -> None:
    answers = session.answers
    # Every tool the user may call; the one that needs admin:write is not shown to this user.
    assert _names(answers["tools"], "tools") == SUITE_TOOLS
    assert _names(answers["prompts"], "prompts") == {
        "test_simple_prompt",
        "test_prompt_with_arguments",
        "test_prompt_with_embedded_resource",
        "test_prompt_with_image",
    }
    assert _names(answers["resources"], "resources", "uri") == {
        "test://static-text",
        "test://static-binary",
        "test://watched-resource",
    }
    assert _names(answers["templates"], "resourceTemplates", "uriTemplate") == {
        "test://template/{id}/data"
    }


def test_inspector_calls_tools_through_the_guard_with_the_key(session: Session) -> None:
    simple, with_args = session.answers["simple"], session.answers["with_args"]
    assert simple.status == 0 and simple.result is not None, simple
    assert simple.result["isError"] is False
    assert simple.result["content"][0]["text"] == "This is a simple text response for testing."
    assert with_args.status == 0 and with_args.result is not None, with_args
    assert json.loads(with_args.result["content"][0]["text"]) == {"name": "Ada", "address": None}
    allowed = {
        event["detail"]["tool"]
        for event in session.events
        if event["method"] == "tools/call" and event["decision"] == "allow"
    }
    assert allowed == {"test_simple_text", SCHEMA_TOOL}


def test_a_tool_the_user_has_no_grant_for_cannot_be_called(session: Session) -> None:
    # The guard hid it from tools/list, so the Inspector does not even send the call.
    refused = session.answers["refused"]
    assert refused.status != 0
    assert refused.error is not None and refused.error["code"] == "tool_not_found", refused
    called = {
        event["detail"]["tool"] for event in session.events if event["method"] == "tools/call"
    }
    assert RESTRICTED_TOOL not in called


def test_without_the_key_the_inspector_gets_the_guards_401(session: Session) -> None:
    no_key = session.answers["no_key"]
    assert no_key.status != 0
    assert no_key.error is not None and no_key.error["code"] == "auth_required", no_key
    assert '"reason":"missing_credentials"' in no_key.error["message"]
    refused = [event for event in session.events if event["reason"] == "missing_credentials"]
    assert refused and {event["status"] for event in refused} == {401}
