"""The MCP conformance suite (npm ``@modelcontextprotocol/conformance`` 0.1.16) through the guard.

The suite plays the MCP client (the TypeScript SDK's) against a server on loopback and records
every check in ``checks.json``. It runs against the plain SDK server (the baseline), the guarded
server with a bearer key, the guarded server with a DPoP-bound key (proofs signed by Node, server
nonces required), and the guarded server without a key. The suite cannot send credentials in
server mode; ``preload.cjs`` adds them below it, so its own records never hold the key.

Every server scenario of 0.1.16 is accounted for: :data:`EXPECTED` (scenario -> the number of
checks that must succeed, none may fail) or :data:`NOT_APPLICABLE` (with the reason).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.mcp_conformance.harness import (
    CALLED_TOOLS,
    Served,
    Suite,
    audit_events,
    run_suite,
    serve,
)
from tests.support import mcp_conformance as tools

#: Scenario -> how many of its checks succeed; every one of these passes with no failed check.
EXPECTED: dict[str, int] = {
    "server-initialize": 1,
    "logging-set-level": 1,
    "ping": 1,
    "completion-complete": 1,
    "tools-list": 1,
    "tools-call-simple-text": 1,
    "tools-call-image": 1,
    "tools-call-audio": 1,
    "tools-call-embedded-resource": 1,
    "tools-call-mixed-content": 1,
    "tools-call-with-logging": 1,
    "tools-call-error": 1,
    "tools-call-with-progress": 1,
    "tools-call-sampling": 1,
    "tools-call-elicitation": 1,
    "json-schema-2020-12": 4,  # "pending" in 0.1.16, run with --suite all
    "elicitation-sep1034-defaults": 5,
    "server-sse-multiple-streams": 2,
    "elicitation-sep1330-enums": 5,
    "resources-list": 1,
    "resources-read-text": 1,
    "resources-read-binary": 1,
    "resources-templates-read": 1,
    "resources-subscribe": 1,
    "resources-unsubscribe": 1,
    "prompts-list": 1,
    "prompts-get-simple": 1,
    "prompts-get-with-args": 1,
    "prompts-get-embedded-resource": 1,
    "prompts-get-with-image": 1,
    "dns-rebinding-protection": 2,
}

#: Scenarios that cannot pass or fail here, and why. They still run: none of their checks fails.
NOT_APPLICABLE: dict[str, str] = {
    "server-sse-polling": (
        "pending in 0.1.16 and unable to reach a verdict: its POST announces MCP-Protocol-Version "
        "2025-03-26, and for clients older than 2025-11-25 the SDK (rightly) sends no priming "
        "event, so test_reconnection cannot close the stream and the suite's two checks end in "
        "WARNING (no priming event, no retry field); the same on the plain SDK server"
    ),
}
#: The checks ``server-sse-polling`` ends in WARNING, on the plain server and the guarded one.
SSE_POLLING_WARNINGS = {"server-sse-priming-event", "server-sse-retry-field"}

#: 0.1.16 has no server-side authorization scenario: every ``auth/*`` scenario judges a client
#: (the suite plays the authorization and resource servers), so none applies to the guard.
CLIENT_ONLY = "auth/"


def _listed() -> dict[str, list[str]]:
    """``conformance list``: the scenario names under each heading (server, client)."""
    home = Path(tools.tools_prefix()) / ".home"
    home.mkdir(exist_ok=True)
    done = tools.run(tools.conformance_command("list"), tools.node_env(home), cwd=home)
    assert done.returncode == 0, done.stderr
    sections: dict[str, list[str]] = {}
    for heading, body in re.findall(
        r"^(\w+) scenarios[^\n]*\n((?:\s+- .*\n?)*)", done.stdout, re.M
    ):
        sections[heading.lower()] = re.findall(r"- (\S+)", body)
    return sections


def assert_conformant(suite: Suite) -> None:
    """Every scenario ran; the expected ones passed with their count of successful checks."""
    assert set(suite.checks) == set(EXPECTED) | set(NOT_APPLICABLE), suite.output[-2000:]
    problems = {}
    for scenario, successes in EXPECTED.items():
        statuses = suite.statuses(scenario)
        if suite.failures(scenario) or statuses.count("SUCCESS") != successes:
            problems[scenario] = suite.failures(scenario) or statuses
    assert not problems, problems
    polling = suite.checks["server-sse-polling"]
    assert not [check for check in polling if check["status"] == "FAILURE"], polling
    warned = {check["id"] for check in polling if check["status"] == "WARNING"}
    assert warned == SSE_POLLING_WARNINGS, polling


def assert_key_never_recorded(suite: Suite, workdir: Path, served: Served) -> None:
    """The suite logs the headers of its own requests: the key is added below it, never seen."""
    key = served.access_key
    assert key not in suite.output
    for path in workdir.rglob("*"):
        if path.is_file():
            assert key not in path.read_text(errors="replace"), path.name


@dataclass
class Run:
    """One suite run against a guarded server, and what the guard audited meanwhile."""

    served: Served
    suite: Suite
    workdir: Path
    events: list[dict[str, Any]]


@pytest.fixture(scope="module")
def bearer_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    tools.tools_prefix()  # install (or skip / fail) before any server starts
    workdir = tmp_path_factory.mktemp("bearer")
    with serve("bearer") as served:
        suite = run_suite(served, workdir)
    return Run(served, suite, workdir, audit_events(served.store))


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    tools.tools_prefix()
    return tmp_path


def test_every_server_scenario_is_accounted_for() -> None:
    listed = _listed()
    assert sorted(listed["server"]) == sorted(set(EXPECTED) | set(NOT_APPLICABLE))
    assert not [name for name in listed["server"] if name.startswith(CLIENT_ONLY)]
    assert [name for name in listed["client"] if name.startswith(CLIENT_ONLY)]


def test_plain_sdk_server_passes_the_applicable_scenarios(workdir: Path) -> None:
    with serve("plain") as served:
        suite = run_suite(served, workdir)
    assert_conformant(suite)


def test_guarded_server_passes_the_same_scenarios_with_a_bearer_key(bearer_run: Run) -> None:
    assert_conformant(bearer_run.suite)


def test_the_key_never_reaches_the_suites_records(bearer_run: Run) -> None:
    assert_key_never_recorded(bearer_run.suite, bearer_run.workdir, bearer_run.served)


def test_every_tool_the_suite_called_was_decided_by_the_guard(bearer_run: Run) -> None:
    calls = [event for event in bearer_run.events if event.get("method") == "tools/call"]
    allowed = {event["detail"]["tool"] for event in calls if event["decision"] == "allow"}
    assert allowed == CALLED_TOOLS
    assert {event["actor"]["user"] for event in calls} == {"conformance"}
    assert {event["service"] for event in calls} == {"conformance"}
    # Every request the suite made was admitted by the guard, not only the tool calls.
    requests = [event for event in bearer_run.events if event["action"] == "guard.decision"]
    assert len(requests) > len(calls) + len(EXPECTED)


def test_dpop_bound_key_with_server_nonces_passes_the_same_scenarios(workdir: Path) -> None:
    with serve("dpop") as served:
        suite = run_suite(served, workdir)
    assert_conformant(suite)
    assert_key_never_recorded(suite, workdir, served)
    refusals = [event["reason"] for event in audit_events(served.store) if event["reason"]]
    # Only the very first proof went without a nonce: refused (use_dpop_nonce), then retried.
    assert refusals == ["dpop_nonce_required"]


def test_without_a_key_the_guard_refuses_every_scenario(workdir: Path) -> None:
    with serve("bearer") as served:
        suite = run_suite(served, workdir, with_key=False)
    assert set(suite.checks) == set(EXPECTED) | set(NOT_APPLICABLE)
    for scenario, checks in suite.checks.items():
        if scenario == "dns-rebinding-protection":
            outcome = {check["id"]: check["status"] for check in checks}
            # A 401 is "a 4xx" to the rebinding check; the valid-host request is refused too.
            assert outcome == {
                "localhost-host-rebinding-rejected": "SUCCESS",
                "localhost-host-valid-accepted": "FAILURE",
            }
            assert "got 401" in suite.failures(scenario)[0]
            continue
        assert suite.statuses(scenario) == ["FAILURE"], (scenario, checks)
        assert "missing_credentials" in suite.failures(scenario)[0], (scenario, checks)
