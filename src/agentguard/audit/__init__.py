"""Tamper-evident audit: events, canonical form, hash chain, Merkle tree, signed checkpoints.

Write path: :class:`AuditWriter` appends :class:`AuditEvent` values to an
:class:`~agentguard.storage.AuditStore`, which seals them into a hash chain. Anchor path:
:class:`Checkpointer` signs C2SP checkpoints into a :class:`CheckpointSink` outside the database.
Read path: :func:`verify_log` walks a log against checkpoints; :func:`prove_entry` and
:func:`verify_proof` give and check offline inclusion proofs (and
:func:`read_tlog_proof`/:func:`verify_tlog_proof` their ``c2sp.org/tlog-proof`` form).
"""

from agentguard.audit._archive import ArchiveRefused
from agentguard.audit._chain import (
    GENESIS_PREV,
    AuditEntry,
    ChainBreak,
    leaf_hash,
    seal,
    verify_chain,
)
from agentguard.audit._checkpointer import (
    ChainBroken,
    Checkpointer,
    CheckpointRefused,
    CheckpointSink,
    DirectoryCheckpointSink,
    LogForked,
    MemoryCheckpointSink,
)
from agentguard.audit._checkpoints import (
    BadSignature,
    Checkpoint,
    CheckpointError,
    Ed25519Signer,
    MalformedNote,
    NoteVerifier,
    Signer,
    UnknownKey,
    open_checkpoint,
    sign_checkpoint,
)
from agentguard.audit._events import SCHEMA_VERSION, Action, AuditEvent, Decision, canonical_json
from agentguard.audit._export import export_log, read_export
from agentguard.audit._merkle import (
    consistency_proof,
    inclusion_proof,
    verify_consistency,
    verify_inclusion,
)
from agentguard.audit._prefix import ArchivedPrefix
from agentguard.audit._proofs import (
    TlogProof,
    prove,
    prove_entry,
    read_tlog_proof,
    tlog_proof,
    verify_proof,
    verify_tlog_proof,
)
from agentguard.audit._verify import Category, Finding, VerifyReport, verify_log
from agentguard.audit._writer import AuditWriter

__all__ = [
    "GENESIS_PREV",
    "SCHEMA_VERSION",
    "Action",
    "ArchiveRefused",
    "ArchivedPrefix",
    "AuditEntry",
    "AuditEvent",
    "AuditWriter",
    "BadSignature",
    "Category",
    "ChainBreak",
    "ChainBroken",
    "Checkpoint",
    "CheckpointError",
    "CheckpointRefused",
    "CheckpointSink",
    "Checkpointer",
    "Decision",
    "DirectoryCheckpointSink",
    "Ed25519Signer",
    "Finding",
    "LogForked",
    "MalformedNote",
    "MemoryCheckpointSink",
    "NoteVerifier",
    "Signer",
    "TlogProof",
    "UnknownKey",
    "VerifyReport",
    "canonical_json",
    "consistency_proof",
    "export_log",
    "inclusion_proof",
    "leaf_hash",
    "open_checkpoint",
    "prove",
    "prove_entry",
    "read_export",
    "read_tlog_proof",
    "seal",
    "sign_checkpoint",
    "tlog_proof",
    "verify_chain",
    "verify_consistency",
    "verify_inclusion",
    "verify_log",
    "verify_proof",
    "verify_tlog_proof",
]
