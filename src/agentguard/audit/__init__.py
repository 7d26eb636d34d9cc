"""Tamper-evident audit: events, canonical form, hash chain, and the writer."""

from agentguard.audit.chain import (
    GENESIS_PREV,
    AuditEntry,
    ChainBreak,
    leaf_hash,
    seal,
    verify_chain,
)
from agentguard.audit.events import SCHEMA_VERSION, Action, AuditEvent, Decision, canonical_json
from agentguard.audit.writer import AuditWriter

__all__ = [
    "GENESIS_PREV",
    "SCHEMA_VERSION",
    "Action",
    "AuditEntry",
    "AuditEvent",
    "AuditWriter",
    "ChainBreak",
    "Decision",
    "canonical_json",
    "leaf_hash",
    "seal",
    "verify_chain",
]
