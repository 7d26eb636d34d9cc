"""The names telemetry uses: span attributes, metric instruments, histogram buckets.

Kept apart (and free of any OpenTelemetry import) so the docs, the tests and dashboards read
one list. Attribute values come from the audit event of the decision and from ids; never a key,
a credential, a body, a path or a query string. Metric attributes are low-cardinality only
(outcome, reason, service, reviewer, status): ids go on spans, never on metrics.
"""

from __future__ import annotations

__all__ = [
    "ATTRIBUTES",
    "DURATION_BUCKETS",
    "METRICS",
    "SCOPE",
    "SPAN_NAME",
]

SCOPE = "agentguard"
"""The instrumentation scope (tracer and meter name)."""

SPAN_NAME = "agentguard.decision"
"""The name of the one span per decision."""

DECISION_ID = "agentguard.decision_id"
AUDIT_SEQ = "agentguard.audit.seq"
DECISION = "agentguard.decision"
REASON = "agentguard.reason"
SERVICE = "agentguard.service"
METHOD = "http.request.method"
RULE_SCOPE = "agentguard.rule.scope"
RULE_VERSION = "agentguard.rule.version"
KEY_ID = "agentguard.key_id"
FAMILY_ID = "agentguard.family_id"
USER_ID = "agentguard.user_id"
WORKSPACE_ID = "agentguard.workspace_id"
ACCOUNT_ID = "agentguard.account_id"
INSTANCE = "agentguard.instance"
LATENCY_US = "agentguard.decision.latency_us"
STATUS = "http.response.status_code"
UPSTREAM_STATUS = "agentguard.upstream.status_code"
UPSTREAM_LATENCY_US = "agentguard.upstream.latency_us"
VERDICTS = "agentguard.review.verdicts"
AUDITED = "agentguard.audited"

ATTRIBUTES: dict[str, str] = {
    DECISION_ID: "the decision id: the audit event's request_id (the client's X-Request-Id when "
    "short and plain, else a fresh random id)",
    AUDIT_SEQ: "the position of the decision's audit event in the log (absent when the refusal "
    "was counted into a summary, or the event was buffered)",
    AUDITED: "false when the decision could not be appended to the audit log (then 503)",
    DECISION: "allow or deny: the final outcome (a call allowed, then refused by a later gate or "
    "the upstream, ends as deny)",
    REASON: "why it was refused (a Reason value), absent when allowed",
    SERVICE: "the service the route rule names",
    METHOD: "the HTTP method",
    RULE_SCOPE: "what the route rule required, as a scope (crm:write, or authenticated)",
    RULE_VERSION: "the version (hash) of the rule the requirement came from, when it has one",
    KEY_ID: "the key's id (never the key)",
    FAMILY_ID: "the key family's id",
    USER_ID: "the user's id",
    WORKSPACE_ID: "the workspace's id",
    ACCOUNT_ID: "the account's id",
    INSTANCE: "this process's name ([audit] instance)",
    LATENCY_US: "the decision's latency in microseconds, as in the audit event",
    STATUS: "the status sent to the agent",
    UPSTREAM_STATUS: "the upstream's status (proxy only)",
    UPSTREAM_LATENCY_US: "time to the upstream's response headers, in microseconds (proxy only)",
    VERDICTS: "each reviewer finding as reviewer:outcome:reason (direction in/out first)",
}

DECISIONS = "agentguard.decisions"
DECISION_DURATION = "agentguard.decision.duration"
UPSTREAM_DURATION = "agentguard.upstream.duration"
REVIEW_VERDICTS = "agentguard.review.verdicts"
LIMIT_REFUSALS = "agentguard.limit.refusals"
AUDIT_APPEND_DURATION = "agentguard.audit.append.duration"
AUDIT_PENDING = "agentguard.audit.pending"

METRICS: dict[str, tuple[str, str, str]] = {
    DECISIONS: ("counter", "{decision}", "decisions by final outcome: decision, reason, service"),
    DECISION_DURATION: ("histogram", "s", "the guard's decision time: decision, service"),
    UPSTREAM_DURATION: (
        "histogram", "s", "time to the upstream's response headers: service, status (or "
        "error for a failed exchange)",
    ),
    REVIEW_VERDICTS: ("counter", "{verdict}", "reviewer findings: direction, reviewer, outcome, "
                      "reason"),
    LIMIT_REFUSALS: ("counter", "{refusal}", "refusals by a budget or a rate limit: limit "
                     "(budget, rate), service"),
    AUDIT_APPEND_DURATION: ("histogram", "s", "audit store appends: outcome (ok, failed)"),
    AUDIT_PENDING: ("gauge", "{event}", "events waiting for the audit store (buffered after a "
                    "failed append, or refusal summaries not yet written): instance"),
}  # fmt: skip

DURATION_BUCKETS: tuple[float, ...] = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
"""Histogram bucket bounds in seconds: from 50 µs (a decision in memory) to 30 s (an upstream)."""
