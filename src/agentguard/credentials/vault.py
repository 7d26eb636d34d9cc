"""CredentialVault: real third-party credentials, encrypted at rest with AES-256-GCM.

Each ciphertext is bound by its associated data to the service, the owner and the credential
id, so a row copied to another service or owner does not decrypt. The plaintext exists only in
memory, wrapped in a :class:`~agentguard.secret.Secret`, for the outbound call.

Ciphertext layout: ``0x01 || nonce (12 bytes) || AES-GCM ciphertext and tag``.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from agentguard.audit.events import Action, AuditEvent, Decision
from agentguard.audit.writer import AuditWriter
from agentguard.clock import Clock, SystemClock
from agentguard.credentials.keyring import KeyRing
from agentguard.keys.format import new_id
from agentguard.model import CredentialOwner, CredentialScope, StoredCredential
from agentguard.secret import Secret
from agentguard.storage.outage import store_outage
from agentguard.storage.protocols import CredentialStore

__all__ = ["CredentialVault", "VaultError"]

_VERSION = b"\x01"


class VaultError(Exception):
    """A stored credential could not be decrypted (wrong key, tampered or misfiled row)."""


def _associated_data(service: str, owner_kind: CredentialOwner, owner_id: str, cid: str) -> bytes:
    fields = ("agentguard/credential/v1", service, owner_kind.value, owner_id, cid)
    return "\x00".join(fields).encode()


class CredentialVault:
    """Stores, reads and re-encrypts credentials through a :class:`CredentialStore`.

    Args:
        store: where ciphertexts live.
        keyring: key-encryption keys; new ciphertexts use its primary key.
        clock: time source for ``created_at``.
        audit: records set/delete/rekey (never values) when given.
    """

    def __init__(
        self,
        store: CredentialStore,
        keyring: KeyRing,
        *,
        clock: Clock | None = None,
        audit: AuditWriter | None = None,
    ) -> None:
        self.store = store
        self.keyring = keyring
        self.clock: Clock = clock or SystemClock()
        self.audit = audit
        self._listeners: list[Callable[[str], None]] = []

    def __repr__(self) -> str:
        return f"CredentialVault(keyring={self.keyring!r})"

    def on_change(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(plaintext)`` with each credential value the vault learns of.

        The secret-leak reviewer uses this to keep its index of exact values current.
        """
        self._listeners.append(listener)

    def _encrypt(self, key_id: str, plaintext: str, aad: bytes) -> bytes:
        nonce = os.urandom(12)
        sealed = AESGCM(self.keyring.key(key_id)).encrypt(nonce, plaintext.encode(), aad)
        return _VERSION + nonce + sealed

    def _decrypt(self, credential: StoredCredential) -> Secret:
        data = credential.ciphertext
        if len(data) < 1 + 12 + 16 or data[:1] != _VERSION:
            raise VaultError(f"credential {credential.id} is not a vault ciphertext")
        aad = _associated_data(
            credential.service, credential.owner_kind, credential.owner_id, credential.id
        )
        try:
            plaintext = AESGCM(self.keyring.key(credential.key_id)).decrypt(
                data[1:13], data[13:], aad
            )
        except InvalidTag:
            raise VaultError(
                f"credential {credential.id} does not decrypt: wrong key, or the row was altered"
            ) from None
        return Secret(plaintext.decode())

    async def put(
        self,
        service: str,
        owner_kind: CredentialOwner,
        owner_id: str,
        value: str | Secret,
        *,
        scope: CredentialScope,
    ) -> StoredCredential:
        """Encrypt and store ``value`` for (service, owner); replaces any previous one."""
        plaintext = value.reveal() if isinstance(value, Secret) else value
        if not plaintext or plaintext != plaintext.strip():
            raise ValueError("a credential is a non-empty string without surrounding spaces")
        cid = new_id("cred")
        key_id = self.keyring.primary
        credential = StoredCredential(
            id=cid,
            service=service,
            owner_kind=owner_kind,
            owner_id=owner_id,
            scope=scope,
            ciphertext=self._encrypt(
                key_id, plaintext, _associated_data(service, owner_kind, owner_id, cid)
            ),
            key_id=key_id,
            created_at=self.clock.now(),
        )
        with store_outage():
            await self.store.put_credential(credential)
        for listener in self._listeners:
            listener(plaintext)
        await self._record(Action.CREDENTIAL_SET, credential)
        return credential

    async def get(
        self, service: str, owner_kind: CredentialOwner, owner_id: str
    ) -> tuple[StoredCredential, Secret] | None:
        """The stored record and its decrypted value, or ``None`` when there is none."""
        with store_outage():
            credential = await self.store.get_credential(service, owner_kind, owner_id)
        if credential is None:
            return None
        return credential, self._decrypt(credential)

    async def delete(self, service: str, owner_kind: CredentialOwner, owner_id: str) -> bool:
        """Remove the credential; ``True`` if there was one."""
        with store_outage():
            credential = await self.store.get_credential(service, owner_kind, owner_id)
            removed = await self.store.delete_credential(service, owner_kind, owner_id)
        if removed and credential is not None:
            await self._record(Action.CREDENTIAL_DELETE, credential)
        return removed

    async def values(self) -> list[Secret]:
        """Every stored credential, decrypted (for secret-leak indexes at start-up)."""
        with store_outage():
            credentials = await self.store.list_credentials()
        return [self._decrypt(credential) for credential in credentials]

    async def rekey(self, progress: Callable[[int], None] | None = None) -> int:
        """Re-encrypt every credential not under the primary key; return how many."""
        with store_outage():
            credentials = await self.store.list_credentials()
        count = 0
        for credential in credentials:
            if credential.key_id == self.keyring.primary:
                continue
            secret = self._decrypt(credential)
            aad = _associated_data(
                credential.service, credential.owner_kind, credential.owner_id, credential.id
            )
            updated = credential.model_copy(
                update={
                    "ciphertext": self._encrypt(self.keyring.primary, secret.reveal(), aad),
                    "key_id": self.keyring.primary,
                }
            )
            with store_outage():
                await self.store.put_credential(updated)
            count += 1
            if progress is not None:
                progress(count)
        if count:
            await self._record_rekey(count)
        return count

    async def _record(self, action: Action, credential: StoredCredential) -> None:
        if self.audit is None:
            return
        is_user = credential.owner_kind is CredentialOwner.USER
        await self.audit.record(
            AuditEvent(
                action=action,
                ts=self.clock.now(),
                decision=Decision.ALLOW,
                service=credential.service,
                user_id=credential.owner_id if is_user else None,
                account_id=None if is_user else credential.owner_id,
                detail={
                    "credential_id": credential.id,
                    "scope": credential.scope.value,
                    "kek": credential.key_id,
                },
            )
        )

    async def _record_rekey(self, count: int) -> None:
        if self.audit is None:
            return
        await self.audit.record(
            AuditEvent(
                action=Action.CREDENTIAL_REKEY,
                ts=self.clock.now(),
                decision=Decision.ALLOW,
                detail={"credentials": count, "kek": self.keyring.primary},
            )
        )
