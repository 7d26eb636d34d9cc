"""CredentialVault: real third-party credentials, encrypted at rest with AES-256-GCM.

Each ciphertext is bound by its associated data to every stored field that decides how it is
used: service, owner, scope, credential id, key id and creation time (see
:mod:`agentguard.credentials._sealing`). Someone who can write to the database but does not hold
the key-encryption key cannot turn an admin credential into a user-scoped one, move a row to
another owner or service, or swap ids: the row no longer opens, and the swapper answers 502.
The plaintext exists only in memory, wrapped in a :class:`~agentguard.Secret`, for the
outbound call.

Rows sealed in the old v1 format (which did not bind the scope) are refused for use until
:meth:`CredentialVault.reseal` re-seals them with a scope the operator confirmed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag

from agentguard._clock import Clock, SystemClock
from agentguard._keys._format import new_id
from agentguard._model import CredentialOwner, CredentialScope, StoredCredential
from agentguard._secret import Secret
from agentguard.audit._events import Action, AuditEvent, Decision
from agentguard.audit._writer import AuditWriter
from agentguard.credentials import _sealing as sealing
from agentguard.credentials._keyring import KeyRing
from agentguard.errors import AgentGuardError, ConfigurationError, UsageError
from agentguard.storage._outage import store_outage
from agentguard.storage._protocols import CredentialStore

__all__ = ["CredentialVault", "KeyMissing", "ResealReport", "ResealRequired", "VaultError"]

logger = logging.getLogger("agentguard.credentials")


class VaultError(AgentGuardError):
    """A stored credential could not be opened (wrong key, tampered or misfiled row).

    The message names the credential id, never its value.
    """


class ResealRequired(VaultError):
    """The row is in the v1 seal format, which does not bind its scope: it is not used."""


class KeyMissing(VaultError, ConfigurationError):
    """The key-encryption key a row was sealed under is not in the key ring."""


@dataclass
class ResealReport:
    """What :meth:`CredentialVault.reseal` did.

    Attributes:
        rewritten: rows written back (re-sealed, or moved to the primary key).
        resealed: ids of v1 rows now sealed as v2, with the scope they now carry.
        narrowed: ids whose stored scope was ``user`` but the operator confirmed ``admin``.
        refused: ids the operator confirmed as ``user`` whose stored scope is ``admin``:
            widening is never done by re-sealing; set the credential again instead.
        unconfirmed: v1 rows left as they are (still refused) for want of a confirmation.
    """

    rewritten: int = 0
    resealed: dict[str, CredentialScope] = field(default_factory=dict)
    narrowed: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    unconfirmed: list[StoredCredential] = field(default_factory=list)


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

    def _seal(self, credential: StoredCredential, plaintext: str) -> StoredCredential:
        """``credential`` with its ciphertext sealed (v2) under its own ``key_id``."""
        aad = sealing.associated_data(sealing.bound_fields(credential))
        sealed = sealing.seal(self._key(credential), plaintext.encode(), aad)
        return credential.model_copy(update={"ciphertext": sealed})

    def _key(self, credential: StoredCredential) -> bytes:
        try:
            return self.keyring.key(credential.key_id)
        except ConfigurationError:
            raise KeyMissing(
                f"credential {credential.id}: key-encryption key {credential.key_id} is not "
                "configured; it is needed to decrypt"
            ) from None

    def _open(self, credential: StoredCredential, *, legacy: bool = False) -> Secret:
        """Decrypt ``credential``; v1 rows only when ``legacy`` (never to use them)."""
        version = sealing.seal_version(credential.ciphertext)
        if version is None:
            raise VaultError(f"credential {credential.id} is not a vault ciphertext")
        if version == sealing.V1 and not legacy:
            raise ResealRequired(
                f"credential {credential.id} is sealed in format v1, which does not bind its "
                "scope; it is not used until 'agentguard credentials reseal' re-seals it"
            )
        aad = sealing.associated_data(sealing.bound_fields(credential), version)
        try:
            plaintext = sealing.open_sealed(self._key(credential), credential.ciphertext, aad)
        except InvalidTag:
            raise VaultError(
                f"credential {credential.id} does not decrypt: a bound field (service, owner, "
                "scope, id, key id, creation time) or the ciphertext was altered, or the key "
                "is wrong"
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
            raise UsageError("a credential is a non-empty string without surrounding spaces")
        if not (plaintext.isascii() and plaintext.isprintable()):
            raise UsageError(
                "a credential is printable ASCII (it is sent in a header or a URL): no control "
                "characters, line breaks or non-ASCII characters such as a typographic '…'"
            )
        unsealed = StoredCredential(
            id=new_id("cred"),
            service=service,
            owner_kind=owner_kind,
            owner_id=owner_id,
            scope=scope,
            ciphertext=b"",
            key_id=self.keyring.primary,
            created_at=self.clock.now(),
        )
        credential = self._seal(unsealed, plaintext)
        with store_outage():
            await self.store.put_credential(credential)
        for listener in self._listeners:
            listener(plaintext)
        await self._record(Action.CREDENTIAL_SET, credential)
        return credential

    async def get(
        self, service: str, owner_kind: CredentialOwner, owner_id: str
    ) -> tuple[StoredCredential, Secret] | None:
        """The stored record and its decrypted value, or ``None`` when there is none.

        Raises :class:`VaultError` when the row does not open: any bound field edited, the
        ciphertext altered, its key missing (:class:`KeyMissing`), or a v1 row that has not been
        re-sealed (:class:`ResealRequired`).
        """
        with store_outage():
            credential = await self.store.get_credential(service, owner_kind, owner_id)
        if credential is None:
            return None
        if (credential.service, credential.owner_kind, credential.owner_id) != (
            service,
            owner_kind,
            owner_id,
        ):
            raise VaultError(f"credential {credential.id} was returned for another slot")
        return credential, self._open(credential)

    async def delete(self, service: str, owner_kind: CredentialOwner, owner_id: str) -> bool:
        """Remove the credential; ``True`` if there was one."""
        with store_outage():
            credential = await self.store.get_credential(service, owner_kind, owner_id)
            removed = await self.store.delete_credential(service, owner_kind, owner_id)
        if removed and credential is not None:
            await self._record(Action.CREDENTIAL_DELETE, credential)
        return removed

    async def values(self) -> list[Secret]:
        """Every stored credential that opens, decrypted (for secret-leak indexes at start-up).

        v1 rows are included (indexing a value grants nothing). A row that does not open is
        logged by id and left out: the swapper refuses it too, so it is never sent.
        """
        with store_outage():
            credentials = await self.store.list_credentials()
        found: list[Secret] = []
        for credential in credentials:
            try:
                found.append(self._open(credential, legacy=True))
            except VaultError as error:
                logger.error("%s", error)
        return found

    async def legacy(self) -> list[StoredCredential]:
        """The rows still in the v1 seal format (refused until re-sealed)."""
        with store_outage():
            credentials = await self.store.list_credentials()
        return [c for c in credentials if sealing.seal_version(c.ciphertext) == sealing.V1]

    async def rekey(
        self,
        progress: Callable[[int], None] | None = None,
        *,
        confirmed: Mapping[str, CredentialScope] | None = None,
    ) -> int:
        """Re-encrypt every credential not under the primary key, and re-seal confirmed v1 rows.

        Returns how many rows were written. See :meth:`reseal` for the rules on v1 rows.
        """
        report = await self.reseal(confirmed or {}, progress=progress)
        return report.rewritten

    async def reseal(
        self,
        confirmed: Mapping[str, CredentialScope],
        *,
        progress: Callable[[int], None] | None = None,
    ) -> ResealReport:
        """Bring every row to the current format under the primary key.

        A v2 row opens only if no bound field changed, so it is re-encrypted as it is. A v1 row
        did not bind its scope, which may have been edited: it is re-sealed as v2 only with the
        scope the operator confirmed for its id in ``confirmed``. Confirming ``admin`` always
        applies (it can only narrow what the credential is used for); confirming ``user`` for
        a row stored as ``admin`` is refused. Unconfirmed v1 rows stay v1 (and refused), moved
        under the primary key so that key rotation still completes.
        """
        with store_outage():
            credentials = await self.store.list_credentials()
        report = ResealReport()
        for credential in credentials:
            version = sealing.seal_version(credential.ciphertext)
            if version == sealing.V1:
                updated = self._reseal_legacy(credential, confirmed.get(credential.id), report)
            elif credential.key_id != self.keyring.primary:
                secret = self._open(credential)
                moved = credential.model_copy(update={"key_id": self.keyring.primary})
                updated = self._seal(moved, secret.reveal())
            else:
                continue
            if updated is None:
                continue
            with store_outage():
                await self.store.put_credential(updated)
            report.rewritten += 1
            if progress is not None:
                progress(report.rewritten)
            if credential.id in report.resealed:
                await self._record(Action.CREDENTIAL_REKEY, updated, resealed_from="v1")
        if report.rewritten:
            await self._record_rekey(report.rewritten)
        return report

    def _reseal_legacy(
        self, credential: StoredCredential, scope: CredentialScope | None, report: ResealReport
    ) -> StoredCredential | None:
        primary = self.keyring.primary
        if scope is CredentialScope.USER and credential.scope is CredentialScope.ADMIN:
            report.refused.append(credential.id)
            scope = None
        if scope is None:
            report.unconfirmed.append(credential)
            if credential.key_id == primary:
                return None
            secret = self._open(credential, legacy=True)
            moved = credential.model_copy(update={"key_id": primary})
            aad = sealing.associated_data(sealing.bound_fields(moved), sealing.V1)
            sealed = sealing.seal(self._key(moved), secret.reveal().encode(), aad, sealing.V1)
            return moved.model_copy(update={"ciphertext": sealed})
        secret = self._open(credential, legacy=True)
        if scope is not credential.scope:
            report.narrowed.append(credential.id)
        report.resealed[credential.id] = scope
        resealed = credential.model_copy(update={"key_id": primary, "scope": scope})
        return self._seal(resealed, secret.reveal())

    async def _record(self, action: Action, credential: StoredCredential, **extra: str) -> None:
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
                    **extra,
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
