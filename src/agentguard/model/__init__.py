"""Data that crosses boundaries: directory records, grants, key records, principals."""

from agentguard.model.credentials import CredentialOwner, CredentialScope, StoredCredential
from agentguard.model.directory import Account, AccountStatus, Membership, User, Workspace
from agentguard.model.grants import SERVICE_NAME_PATTERN, Grants, Level
from agentguard.model.keys import IssuedKeys, KeyKind, KeyRecord
from agentguard.model.principal import Principal

__all__ = [
    "SERVICE_NAME_PATTERN",
    "Account",
    "AccountStatus",
    "CredentialOwner",
    "CredentialScope",
    "Grants",
    "IssuedKeys",
    "KeyKind",
    "KeyRecord",
    "Level",
    "Membership",
    "Principal",
    "StoredCredential",
    "User",
    "Workspace",
]
