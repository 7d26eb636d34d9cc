"""Data that crosses boundaries: directory records, grants, key records, principals."""

from agentguard._model._approvals import ApprovalRecord, ApprovalStatus, OperatorRecord
from agentguard._model._connections import (
    ConnectedAccount,
    ConnectFlow,
    ConnectionStatus,
    FlowKind,
)
from agentguard._model._credentials import CredentialOwner, CredentialScope, StoredCredential
from agentguard._model._directory import Account, AccountStatus, Membership, User, Workspace
from agentguard._model._grants import SERVICE_NAME_PATTERN, TOOL_NAME_PATTERN, Grants, Level
from agentguard._model._keys import IssuedKeys, KeyKind, KeyRecord
from agentguard._model._principal import Principal

__all__ = [
    "SERVICE_NAME_PATTERN",
    "TOOL_NAME_PATTERN",
    "Account",
    "AccountStatus",
    "ApprovalRecord",
    "ApprovalStatus",
    "ConnectFlow",
    "ConnectedAccount",
    "ConnectionStatus",
    "CredentialOwner",
    "CredentialScope",
    "FlowKind",
    "Grants",
    "IssuedKeys",
    "KeyKind",
    "KeyRecord",
    "Level",
    "Membership",
    "OperatorRecord",
    "Principal",
    "StoredCredential",
    "User",
    "Workspace",
]
