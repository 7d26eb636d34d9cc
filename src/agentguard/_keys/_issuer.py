"""KeyIssuer: issue a key pair, refresh it with rotation, revoke by key, family or user.

Refresh keys work once. Presenting a used refresh key again is the signature of a stolen key
(RFC 9700 §4.14.2): the whole family (every access and refresh key descended from the same
issuance) is revoked and the event is audited as ``key.reuse_detected``. Of two concurrent
refreshes of one key exactly one wins; the other is treated as reuse.

Revoking a family or a user wins against rotation: once :meth:`KeyIssuer.revoke` returns, no
key of the revoked families resolves or rotates, including a successor that a concurrent
refresh (on any instance) was minting. The store marks the families, and its lookup and
rotation both read the mark (see :meth:`~agentguard.storage.KeyStore.revoke`).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from agentguard._audience import InvalidTarget, canonical_resource, narrow_audience
from agentguard._clock import Clock
from agentguard._keys._format import generate_key, hash_key, new_id, parse_key
from agentguard._model import Grants, IssuedKeys, KeyKind, KeyRecord
from agentguard._resolver import KeyIds, key_context, liveness_failure
from agentguard.audit._events import Action, AuditEvent, Decision, Scalar
from agentguard.audit._writer import AuditWriter
from agentguard.errors import InvalidGrant, IssuanceRefused, MalformedKey, Reason, UsageError
from agentguard.storage._outage import store_outage
from agentguard.storage._protocols import KeyLookup, KeyStore, revoke_selector

__all__ = ["DEFAULT_ACCESS_TTL", "DEFAULT_REFRESH_TTL", "KeyIssuer"]

DEFAULT_ACCESS_TTL = timedelta(hours=1)
DEFAULT_REFRESH_TTL = timedelta(days=30)


class KeyIssuer:
    """Issues, rotates and revokes agentguard keys against a :class:`KeyStore`.

    Args:
        store: the key and directory store.
        clock: the time source.
        audit: where lifecycle events go; ``None`` records nothing (tests, tooling).
        access_ttl: lifetime of access keys (default one hour).
        refresh_ttl: lifetime of each refresh key (default 30 days, renewed on rotation).
        require_binding: refuse to issue or rotate keys that are not bound to a DPoP key.
    """

    def __init__(
        self,
        store: KeyStore,
        *,
        clock: Clock,
        audit: AuditWriter | None = None,
        access_ttl: timedelta = DEFAULT_ACCESS_TTL,
        refresh_ttl: timedelta = DEFAULT_REFRESH_TTL,
        require_binding: bool = False,
    ) -> None:
        if access_ttl <= timedelta(0) or refresh_ttl <= timedelta(0):
            raise UsageError("key lifetimes must be positive")
        self.store = store
        self.clock = clock
        self.audit = audit
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl
        self.require_binding = require_binding

    async def _record(self, event: AuditEvent) -> None:
        if self.audit is not None:
            await self.audit.record(event)

    def _pair(
        self,
        *,
        user_id: str,
        workspace_id: str,
        account_id: str,
        family_id: str,
        scope: Grants | None,
        jkt: str | None,
        audience: str | None,
        now: datetime,
    ) -> IssuedKeys:
        access_key, refresh_key = generate_key(KeyKind.ACCESS), generate_key(KeyKind.REFRESH)
        common = {
            "family_id": family_id,
            "user_id": user_id,
            "workspace_id": workspace_id,
            "account_id": account_id,
            "created_at": now,
            "scope": scope,
            "jkt": jkt,
            "audience": audience,
        }
        access = KeyRecord(
            id=new_id("key"),
            kind=KeyKind.ACCESS,
            key_hash=hash_key(access_key.reveal()),
            expires_at=now + self.access_ttl,
            **common,  # type: ignore[arg-type]
        )
        refresh = KeyRecord(
            id=new_id("key"),
            kind=KeyKind.REFRESH,
            key_hash=hash_key(refresh_key.reveal()),
            expires_at=now + self.refresh_ttl,
            **common,  # type: ignore[arg-type]
        )
        return IssuedKeys(access_key, refresh_key, access, refresh)

    async def issue(
        self,
        user_id: str,
        workspace_id: str,
        *,
        scope: Grants | None = None,
        jkt: str | None = None,
        audience: str | None = None,
    ) -> IssuedKeys:
        """Issue a new access/refresh pair (a new family) for ``user_id`` in ``workspace_id``.

        ``scope`` narrows the user's grants for these keys (it can never widen them); ``jkt``
        binds both keys to a DPoP key; ``audience`` names the resource they are for (RFC 8707,
        e.g. ``"https://api.example.com/mcp"``; stored normalised; ``None``: every resource of
        this deployment). Raises :class:`IssuanceRefused` when the user is unknown or disabled,
        the workspace unknown, the user not a member, or the account closed, and
        :class:`~agentguard.errors.UsageError` for an audience that is not an absolute http(s)
        URL without query or fragment.
        """
        if audience is not None:
            try:
                audience = canonical_resource(audience)
            except ValueError as error:
                raise UsageError(f"audience: {error} (RFC 8707)") from None
        with store_outage():
            user = await self.store.get_user(user_id)
            workspace = await self.store.get_workspace(workspace_id)
            account = await self.store.get_account(user.account_id) if user else None
            member = await self.store.is_member(user_id, workspace_id)
        if user is None:
            raise IssuanceRefused(reason=Reason.UNKNOWN_USER)
        if workspace is None or workspace.account_id != user.account_id:
            raise IssuanceRefused(reason=Reason.UNKNOWN_WORKSPACE)
        if account is None or not account.active:
            raise IssuanceRefused(reason=Reason.ACCOUNT_CLOSED)
        if not user.enabled:
            raise IssuanceRefused(reason=Reason.USER_DISABLED)
        if not member:
            raise IssuanceRefused(reason=Reason.NOT_A_MEMBER)
        if self.require_binding and jkt is None:
            raise IssuanceRefused(
                "this server requires DPoP: issue keys bound to the agent's DPoP key (jkt=...)",
                reason=Reason.DPOP_REQUIRED,
            )
        now = self.clock.now()
        issued = self._pair(
            user_id=user.id,
            workspace_id=workspace.id,
            account_id=account.id,
            family_id=new_id("fam"),
            scope=scope,
            jkt=jkt,
            audience=audience,
            now=now,
        )
        with store_outage():
            await self.store.insert_keys([issued.access, issued.refresh])
        await self._record(
            AuditEvent(
                action=Action.KEY_ISSUE,
                ts=now,
                decision=Decision.ALLOW,
                **key_context(issued.access),
                detail=_with_audience(
                    {"refresh_key_id": issued.refresh.id, "dpop_bound": jkt is not None}, audience
                ),
            )
        )
        return issued

    async def _refresh_denied(
        self, reason: Reason, found: KeyLookup | None, now: datetime, source: str | None = None
    ) -> InvalidGrant:
        audit = self.audit
        if (
            found is None
            and audit is not None
            and audit.summaries is not None
            and audit.summaries.counts(reason.value)
        ):  # names no one: counted per source and interval, not one event each
            error = InvalidGrant(reason=reason)
            await audit.count_refusal(source=source, reason=reason.value, status=error.status)
            return error
        ids: KeyIds = key_context(found.key) if found is not None else {}
        event = AuditEvent(
            action=Action.KEY_REFRESH, ts=now, decision=Decision.DENY, reason=reason.value, **ids
        )
        await self._record(event)
        if found is None:
            return InvalidGrant(reason=reason)
        return InvalidGrant(reason=reason).with_context(**key_context(found.key))

    async def _reuse_detected(self, found: KeyLookup, now: datetime) -> InvalidGrant:
        with store_outage():
            revoked = await self.store.revoke(
                family_id=found.key.family_id, reason=Reason.REFRESH_REUSED.value, now=now
            )
        await self._record(
            AuditEvent(
                action=Action.KEY_REUSE_DETECTED,
                ts=now,
                decision=Decision.DENY,
                reason=Reason.REFRESH_REUSED.value,
                **key_context(found.key),
                detail={"revoked_keys": revoked},
            )
        )
        return InvalidGrant(reason=Reason.REFRESH_REUSED).with_context(**key_context(found.key))

    async def _rotation_lost(self, found: KeyLookup, now: datetime) -> InvalidGrant:
        """A refresh key that looked live did not rotate: revoked meanwhile, or used (reuse).

        A revocation that won the race is not a stolen key: re-read the key and report it as
        revoked, without the reuse alarm. Only a key another refresh used is reuse.
        """
        with store_outage():
            current = await self.store.lookup(found.key.key_hash)
        if current is not None and current.key.used_at is None and current.key.revoked:
            return await self._refresh_denied(Reason.REVOKED, current, now)
        return await self._reuse_detected(found, now)

    async def refresh(
        self,
        refresh_key: str,
        *,
        jkt: str | None = None,
        scope: Grants | None = None,
        source: str | None = None,
        resource: str | None = None,
    ) -> IssuedKeys:
        """Exchange a refresh key for a new pair in the same family (rotation).

        ``jkt`` is the thumbprint of the DPoP key that signed this request's proof, if any; a
        bound refresh key needs the same key. ``scope`` may narrow the family's scope further.
        ``resource`` (RFC 8707) may narrow the family's audience, never switch it: a resource
        the current audience does not cover, or a malformed one, raises
        :class:`~agentguard.errors.InvalidTarget` (400 ``invalid_target``) and the refresh
        key stays unused. Raises :class:`InvalidGrant` with a precise reason; reuse revokes the
        family. A malformed or unknown key names no one: when the audit writer counts such
        refusals, it is counted per ``source`` (the client's address) and interval instead of one
        event each.
        """
        now = self.clock.now()
        try:
            parsed = parse_key(refresh_key)
        except MalformedKey:
            raise await self._refresh_denied(Reason.MALFORMED_KEY, None, now, source) from None
        with store_outage():
            found = await self.store.lookup(hash_key(parsed.value))
        if found is None:
            raise await self._refresh_denied(Reason.UNKNOWN_KEY, None, now, source)
        key = found.key
        if key.kind is not KeyKind.REFRESH:
            raise await self._refresh_denied(Reason.WRONG_KEY_KIND, found, now)
        if key.used_at is not None:
            raise await self._reuse_detected(found, now)
        reason = liveness_failure(found, now)
        if reason is None and key.jkt is not None and key.jkt != jkt:
            reason = Reason.DPOP_BINDING_MISMATCH
        if reason is None and self.require_binding and key.jkt is None and jkt is None:
            reason = Reason.DPOP_REQUIRED
        if reason is not None:
            raise await self._refresh_denied(reason, found, now)
        try:
            audience = narrow_audience(key.audience, resource)
        except InvalidTarget as refused:
            event = AuditEvent(
                action=Action.KEY_REFRESH,
                ts=now,
                decision=Decision.DENY,
                reason=refused.reason.value,
                **key_context(key),
            )
            await self._record(event)
            raise refused.with_context(**key_context(key)) from None
        new_scope = key.scope if scope is None else scope.narrow(key.scope)  # never wider
        issued = self._pair(
            user_id=key.user_id,
            workspace_id=key.workspace_id,
            account_id=key.account_id,
            family_id=key.family_id,
            scope=new_scope,
            jkt=key.jkt if key.jkt is not None else jkt,
            audience=audience,
            now=now,
        )
        with store_outage():
            won = await self.store.rotate(key.id, [issued.access, issued.refresh], now=now)
        if not won:
            raise await self._rotation_lost(found, now)
        await self._record(
            AuditEvent(
                action=Action.KEY_REFRESH,
                ts=now,
                decision=Decision.ALLOW,
                **key_context(issued.access),
                detail=_with_audience(
                    {"used_key_id": key.id, "refresh_key_id": issued.refresh.id},
                    audience if audience != key.audience else None,
                ),
            )
        )
        return issued

    async def revoke_presented(self, presented: str) -> bool:
        """RFC 7009 revocation of a presented key: a refresh key takes its family with it.

        Returns whether anything was revoked; unknown or malformed keys are not an error.
        """
        try:
            parsed = parse_key(presented)
        except MalformedKey:
            return False
        with store_outage():
            found = await self.store.lookup(hash_key(parsed.value))
        if found is None:
            return False
        if found.key.kind is KeyKind.REFRESH:
            return await self.revoke(family_id=found.key.family_id, reason="revoked_by_client") > 0
        return await self.revoke(key_id=found.key.id, reason="revoked_by_client") > 0

    async def revoke(
        self,
        *,
        key_id: str | None = None,
        family_id: str | None = None,
        user_id: str | None = None,
        reason: str = "revoked",
    ) -> int:
        """Revoke by key id, family id or user id (exactly one); audited; returns the count.

        Raises :class:`~agentguard.errors.UsageError` (a ``ValueError``) unless exactly one
        selector is given: a caller's mistake, not a store outage, and not audited.
        """
        revoke_selector(key_id=key_id, family_id=family_id, user_id=user_id)
        now = self.clock.now()
        with store_outage():
            count = await self.store.revoke(
                key_id=key_id, family_id=family_id, user_id=user_id, reason=reason, now=now
            )
        await self._record(
            AuditEvent(
                action=Action.KEY_REVOKE,
                ts=now,
                decision=Decision.ALLOW,
                reason=reason,
                key_id=key_id,
                family_id=family_id,
                user_id=user_id,
                detail={"revoked_keys": count},
            )
        )
        return count


def _with_audience(detail: dict[str, Scalar], audience: str | None) -> dict[str, Scalar]:
    """``detail`` naming the audience set (a URL, never a secret), when there is one."""
    return detail if audience is None else {**detail, "audience": audience}
