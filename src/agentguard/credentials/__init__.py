"""Real third-party credentials: encrypted at rest, swapped in below the model.

:class:`CredentialVault` keeps them (AES-256-GCM under a :class:`KeyRing`),
:class:`CredentialSwapper` picks or mints the one for each call, the minters turn admin-scoped
credentials into user-scoped tokens, and the placement functions move keys in and out of the
vendor-native place.
"""

from agentguard.credentials._echo import EchoScanner, SecretEchoed, StreamScanner, secret_forms
from agentguard.credentials._keyring import KeyRing
from agentguard.credentials._minting import (
    CallableMinter,
    MintCache,
    MintedToken,
    Minter,
    MintingError,
    TokenExchangeMinter,
)
from agentguard.credentials._swapper import CredentialSwapper
from agentguard.credentials._vault import CredentialVault, VaultError

__all__ = [
    "CallableMinter",
    "CredentialSwapper",
    "CredentialVault",
    "EchoScanner",
    "KeyRing",
    "MintCache",
    "MintedToken",
    "Minter",
    "MintingError",
    "SecretEchoed",
    "StreamScanner",
    "TokenExchangeMinter",
    "VaultError",
    "secret_forms",
]
