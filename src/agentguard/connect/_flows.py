"""The connect flow's single-use records: operator-issued connect links and OAuth states.

A human reaches the connect page with a **ticket** (a one-time link an operator issued for one
user and one service, :meth:`ConnectFlows.issue_ticket`) or with the application's own session.
:meth:`ConnectFlows.begin` then starts an authorization at the vendor: a random ``state``
bound to the user and the service, a PKCE verifier (S256) and a **browser secret** for the
cookie that ties the callback to the browser that started it. :meth:`ConnectFlows.complete`
takes the state back, once, and only from that browser.

What is stored, in :class:`~agentguard.connect.ConnectFlow` records: the SHA-256 of the ticket
or state, the SHA-256 of the browser secret, and the PKCE verifier sealed with AES-256-GCM
under the key ring's primary key, its associated data binding the flow's id, service, user and
creation time (a sealed verifier copied onto another flow does not open). Every record is
single use (:meth:`ConnectFlowStore.take_flow`) and expires (tickets after 15 minutes, states
after 10 by default). :meth:`ConnectFlows.inspect_ticket` reads a ticket's record without using
it up, so the confirmation page can say whose link it is.

Refusals are audited as ``connection.refuse``. One that names no one (a malformed, unknown,
used or expired ticket or state: anyone on the network can send those by the million) is
counted per source and interval into the audit writer's refusal summary when it keeps one
(``guard.refusal_summary``), not appended one by one; so is one that inspecting a ticket makes
(another service's link), which uses nothing up and could be repeated for as long as the link
lives. A refusal about a real flow that used it up (another service, another browser) is its
own event: each takes a single-use record, so there are few.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, TypeGuard

from cryptography.exceptions import InvalidTag
from pydantic import TypeAdapter

from agentguard._clock import Clock, SystemClock
from agentguard._keys._format import new_id
from agentguard._model import ConnectFlow, FlowKind
from agentguard._model._base import Identifier
from agentguard._secret import Secret
from agentguard.audit._events import Action, AuditEvent, Decision
from agentguard.audit._writer import AuditWriter
from agentguard.connect._flow_errors import (
    LINK_GONE,
    LINK_MALFORMED,
    LINK_OTHER_SERVICE,
    STATE_GONE,
    STATE_OTHER_SERVICE,
    STATE_UNREADABLE,
    WRONG_BROWSER,
    ConnectRefused,
)
from agentguard.connect._flow_tokens import (
    code_challenge,
    generate_browser_secret,
    generate_state,
    generate_ticket,
    generate_verifier,
    is_state,
    is_ticket,
    token_hash,
)
from agentguard.errors import UsageError
from agentguard.storage._connection_protocols import ConnectFlowStore
from agentguard.storage._outage import store_outage

if TYPE_CHECKING:
    from agentguard.credentials._keyring import KeyRing

__all__ = ["Authorization", "ConnectFlows"]

_ROLE = "connect flow store"
_LABEL = "agentguard/connect-verifier/v1"
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)
_ID_CHECK: TypeAdapter[str] = TypeAdapter(Identifier)


@dataclass(frozen=True)
class Authorization:
    """An authorization started at the vendor (what :meth:`ConnectFlows.begin` returns).

    Attributes:
        flow: the stored record (``kind="state"``).
        state: the OAuth ``state`` for the authorization request.
        code_challenge: the PKCE S256 challenge for the authorization request.
        browser_secret: the value of the browser-binding cookie to set.
    """

    flow: ConnectFlow
    state: Secret
    code_challenge: str
    browser_secret: Secret


def _verifier_aad(flow_id: str, service: str, user_id: str, key_id: str, at: datetime) -> bytes:
    """Length-prefixed fields (as the vault's v2 seal), so no value can move a boundary."""
    micros = str((at - _EPOCH) // _MICROSECOND)
    out = bytearray()
    for part in (_LABEL, flow_id, service, user_id, key_id, micros):
        data = part.encode()
        out += len(data).to_bytes(4, "big") + data
    return bytes(out)


def _taken(flow: ConnectFlow | None, digest: bytes, kind: FlowKind) -> TypeGuard[ConnectFlow]:
    """Whether the store returned the record asked for (a loose backend finds nothing else)."""
    return flow is not None and flow.kind is kind and hmac.compare_digest(flow.token_hash, digest)


def _check_identifier(name: str, value: str) -> None:
    if not isinstance(value, str) or not _is_identifier(value):
        raise UsageError(
            f"{name} must be 1-128 letters, digits or . _ : @ -, starting with a letter or digit"
        )


def _is_identifier(value: str) -> bool:
    try:
        _ID_CHECK.validate_python(value)
    except ValueError:
        return False
    return True


class ConnectFlows:
    """Issues and redeems connect-link tickets; starts and completes OAuth authorizations.

    Args:
        store: where the single-use records live (shared by every instance).
        keyring: seals the PKCE verifiers (the primary key; any key in the ring opens).
        clock: the time source.
        audit: records ``connection.link`` when a ticket is issued (never the ticket) and
            ``connection.refuse`` for every refused step (counted in its refusal summary when
            the refusal names no one, see the module doc); ``None`` records nothing.
        ticket_ttl: how long a connect link may wait to be opened.
        state_ttl: how long the human may take at the vendor.

    A store failure is raised as :class:`~agentguard.errors.StoreUnavailable` (503); every
    refusal as :class:`ConnectRefused` (403 ``access_denied``).
    """

    def __init__(
        self,
        store: ConnectFlowStore,
        keyring: KeyRing,
        *,
        clock: Clock | None = None,
        audit: AuditWriter | None = None,
        ticket_ttl: timedelta = timedelta(minutes=15),
        state_ttl: timedelta = timedelta(minutes=10),
    ) -> None:
        if ticket_ttl <= timedelta(0) or state_ttl <= timedelta(0):
            raise UsageError("ticket_ttl and state_ttl must be positive")
        self.store = store
        self.keyring = keyring
        self.clock: Clock = clock or SystemClock()
        self.audit = audit
        self.ticket_ttl = ticket_ttl
        self.state_ttl = state_ttl

    def __repr__(self) -> str:
        return f"ConnectFlows(store={type(self.store).__name__}, keyring={self.keyring!r})"

    async def issue_ticket(
        self, service: str, user_id: str, *, by: str
    ) -> tuple[Secret, ConnectFlow]:
        """A one-time connect link's ticket for ``user_id`` and ``service``, and its record.

        Show the ticket once (in the link sent to the human); only its hash is stored. ``by``
        names who issued it (an operator token's name, ``cli``), for the audit.
        """
        _check_identifier("service", service)
        _check_identifier("user_id", user_id)
        ticket = generate_ticket()
        now = self.clock.now()
        record = ConnectFlow(
            id=new_id("cf"),
            kind=FlowKind.TICKET,
            token_hash=token_hash(ticket.reveal()),
            service=service,
            user_id=user_id,
            created_at=now,
            expires_at=now + self.ticket_ttl,
            created_by=by,
        )
        with store_outage(_ROLE, "put_flow"):
            await self.store.put_flow(record)
        if self.audit is not None:
            await self.audit.record(
                AuditEvent(
                    action=Action.CONNECTION_LINK,
                    ts=now,
                    decision=Decision.ALLOW,
                    service=service,
                    user_id=user_id,
                    detail={
                        "flow_id": record.id,
                        "by": by,
                        "expires_at": record.expires_at.isoformat(),
                    },
                )
            )
        return ticket, record

    async def redeem_ticket(
        self, ticket: str, *, service: str, source: str | None = None
    ) -> ConnectFlow:
        """The ticket's record, taken (single use): the human is its ``user_id``.

        Refused (:class:`ConnectRefused`) when the ticket is malformed, unknown, used or
        expired (one answer for the last three), or issued for another service (it is used up
        all the same). ``source`` (the client's address) is what a refusal that names no one
        is counted under.
        """
        return await self._ticket(ticket, service, source, take=True)

    async def inspect_ticket(
        self, ticket: str, *, service: str, source: str | None = None
    ) -> ConnectFlow:
        """The ticket's record, left unused: whose link it is, before anyone uses it.

        The same refusals as :meth:`redeem_ticket`, in the same words; nothing is used up, so
        every refusal (another service's link included) is counted under ``source`` when the
        audit writer keeps a refusal summary, never appended one by one.
        """
        return await self._ticket(ticket, service, source, take=False)

    async def _ticket(
        self, ticket: str, service: str, source: str | None, *, take: bool
    ) -> ConnectFlow:
        step = "ticket" if take else "link"
        if not is_ticket(ticket):
            raise await self._refused(LINK_MALFORMED, step, "malformed", service, source=source)
        digest = token_hash(ticket)
        now = self.clock.now()
        if take:
            with store_outage(_ROLE, "take_flow"):
                flow = await self.store.take_flow(digest, kind=FlowKind.TICKET, now=now)
        else:
            with store_outage(_ROLE, "peek_flow"):
                flow = await self.store.peek_flow(digest, kind=FlowKind.TICKET, now=now)
        if not _taken(flow, digest, FlowKind.TICKET):
            raise await self._refused(LINK_GONE, step, "unknown_or_used", service, source=source)
        if flow.service != service:  # inspecting uses nothing up: counted, not appended
            raise await self._refused(
                LINK_OTHER_SERVICE, step, "other_service", service, flow.user_id,
                source=source, counted=not take,
            )  # fmt: skip
        return flow

    async def begin(self, service: str, user_id: str) -> Authorization:
        """Start an authorization for ``user_id`` at ``service``'s vendor.

        Stores a ``state`` record holding the sealed PKCE verifier and the hash of a new
        browser secret; returns the state, the S256 challenge and the browser secret.
        """
        _check_identifier("service", service)
        _check_identifier("user_id", user_id)
        state = generate_state()
        verifier = generate_verifier()
        browser = generate_browser_secret()
        now = self.clock.now()
        flow_id = new_id("cf")
        # imported here: agentguard._services imports this package (its OAuth settings), and
        # agentguard.credentials imports agentguard._services
        from agentguard.credentials._sealing import seal

        key_id = self.keyring.primary
        sealed = seal(
            self.keyring.key(key_id),
            verifier.reveal().encode("ascii"),
            _verifier_aad(flow_id, service, user_id, key_id, now),
        )
        record = ConnectFlow(
            id=flow_id,
            kind=FlowKind.STATE,
            token_hash=token_hash(state.reveal()),
            service=service,
            user_id=user_id,
            created_at=now,
            expires_at=now + self.state_ttl,
            browser_hash=token_hash(browser.reveal()),
            verifier=sealed,
        )
        with store_outage(_ROLE, "put_flow"):
            await self.store.put_flow(record)
        return Authorization(record, state, code_challenge(verifier.reveal()), browser)

    async def complete(
        self,
        state: str,
        *,
        service: str,
        browser_secret: str | None,
        source: str | None = None,
    ) -> tuple[ConnectFlow, Secret]:
        """Take the authorization ``state`` names (single use); return it and its verifier.

        Refused (:class:`ConnectRefused`) when the state is malformed (never looked up),
        unknown, used or expired, was started for another service, or ``browser_secret`` (the
        cookie) is missing or not the one set when it began; the state is used up in every
        case where it was found. ``source`` as for :meth:`redeem_ticket`.
        """
        if not is_state(state):
            raise await self._refused(STATE_GONE, "state", "malformed", service, source=source)
        digest = token_hash(state)
        with store_outage(_ROLE, "take_flow"):
            flow = await self.store.take_flow(digest, kind=FlowKind.STATE, now=self.clock.now())
        if not _taken(flow, digest, FlowKind.STATE):
            raise await self._refused(
                STATE_GONE, "state", "unknown_or_used", service, source=source
            )
        if flow.service != service:
            raise await self._refused(
                STATE_OTHER_SERVICE, "state", "other_service", service, flow.user_id
            )
        expected = flow.browser_hash
        presented = token_hash(browser_secret) if browser_secret is not None else b""
        if expected is None or not hmac.compare_digest(expected, presented):
            why = "no_browser_cookie" if browser_secret is None else "other_browser"
            raise await self._refused(WRONG_BROWSER, "state", why, service, flow.user_id)
        verifier = self._open_verifier(flow)
        if verifier is None:
            raise await self._refused(
                STATE_UNREADABLE, "state", "verifier_unreadable", service, flow.user_id
            )
        return flow, verifier

    def _open_verifier(self, flow: ConnectFlow) -> Secret | None:
        from agentguard.credentials._sealing import open_sealed  # see begin()

        if flow.verifier is None:
            return None
        # the record names no key: try the primary first, then the others (a rotation
        # during the minutes an authorization takes); a wrong key fails its tag
        ids = (self.keyring.primary, *(i for i in self.keyring.ids if i != self.keyring.primary))
        for key_id in ids:
            aad = _verifier_aad(flow.id, flow.service, flow.user_id, key_id, flow.created_at)
            try:
                plain = open_sealed(self.keyring.key(key_id), flow.verifier, aad)
            except (InvalidTag, ValueError):
                continue
            try:
                return Secret(plain.decode("ascii"))
            except UnicodeDecodeError:
                return None
        return None

    async def _refused(
        self,
        description: str,
        step: str,
        why: str,
        service: str,
        user_id: str | None = None,
        *,
        source: str | None = None,
        counted: bool = False,
    ) -> ConnectRefused:
        """The refusal, recorded as ``connection.refuse`` (never with the token itself), or
        counted under ``source`` when it names no one or is ``counted`` (it used nothing up)
        and the writer keeps summaries."""
        error = ConnectRefused(description, service=service, user_id=user_id)
        audit = self.audit
        counts = user_id is None or counted
        if audit is not None and counts and audit.summaries is not None:
            await audit.count_refusal(
                source=source,
                reason=error.reason.value,
                status=error.status,
                service=service if _is_identifier(service) else None,
            )
        elif audit is not None:
            await audit.record(
                AuditEvent(
                    action=Action.CONNECTION_REFUSE,
                    ts=self.clock.now(),
                    decision=Decision.DENY,
                    reason=error.reason.value,
                    service=service if _is_identifier(service) else None,
                    user_id=user_id,
                    status=error.status,
                    detail={"step": step, "why": why},
                )
            )
        return error
