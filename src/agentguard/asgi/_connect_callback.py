"""The vendor's redirect back to the connect pages: ``GET /{service}/callback``.

In order: the ``state`` is taken (single use, this service, the browser that started it:
:meth:`~agentguard.connect.ConnectFlows.complete`); the response's ``iss`` must be the vendor's
own issuer (RFC 9207 §2.4: exactly, and present when the vendor's metadata promises it), the
defence against a mix-up where another authorization server's code is slipped in; with
``identify``, the signed-in user must be the one who started; the user must still exist, be
enabled and have an active account; only then is the code exchanged, with the PKCE verifier,
and the tokens stored. The binding cookie is cleared on every answer that used the state up.

A vendor's ``error=`` answer uses the state up too and is reported in fixed words (its own
``error_description`` is never shown); when the state is refused (unknown, used, another
browser's), that refusal is the answer.

Every refusal is audited with the status the browser got. Those that name no one (a query that
cannot be read, one without its state or code, the binding cookie sent twice or next to a
look-alike of its name, a vendor error with no state) are counted per client address into the
refusal summary (:mod:`agentguard.asgi._connect_audit`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from agentguard._reasons import Reason
from agentguard.asgi._connect_audit import RefusalLog, client_of
from agentguard.asgi._connect_pages import (
    Answer,
    page,
    refusal_page,
    user_label,
    vendor_error_page,
    with_headers,
)
from agentguard.asgi._connect_request import named_cookie, read_query
from agentguard.connect._errors import VendorRefused, VendorUnavailable
from agentguard.connect._flow_errors import COOKIE_AMBIGUOUS, ISSUER_WRONG
from agentguard.errors import InvalidRequest, RequestRefused

if TYPE_CHECKING:
    from agentguard._model import User
    from agentguard.asgi._connect import ConnectApp
    from agentguard.asgi._types import Scope

__all__ = ["Callback", "vendor_down"]

_VENDOR_ERROR = re.compile(r"[a-z_]{1,64}\Z")
_OTHER_FINISHER = "the connection must be finished by the user who started it"


class Callback:
    """``GET /{service}/callback`` of ``app`` (its flows, vendors, accounts and checks)."""

    def __init__(self, app: ConnectApp) -> None:
        self.app = app

    def __repr__(self) -> str:
        return f"Callback({self.app!r})"

    async def handle(self, scope: Scope, service: str) -> Answer:
        """The answer to the vendor's redirect (see the module docstring)."""
        app = self.app
        source = client_of(scope)
        try:
            query = read_query(scope)
        except InvalidRequest as unreadable:  # a parameter twice, not UTF-8, too many fields
            await app.refusals.record(
                service, None, reason=unreadable.reason, status=unreadable.status,
                step="callback", why="bad_query", source=source,
            )  # fmt: skip
            raise
        cookies = named_cookie(scope, app.cookie_name(service))
        if len(cookies.values) > 1 or cookies.lookalikes:  # planted by another host (or
            # under a name only a lax parser reads as ours): which is the browser's is unknown
            why = "cookie_lookalike" if cookies.lookalikes else "cookie_twice"
            raise await app.refusals.refuse(
                COOKIE_AMBIGUOUS, service, None, "callback", why, source=source
            )
        browser = cookies.values[0] if cookies.values else None
        state, code, error = query.get("state"), query.get("code"), query.get("error")
        if error is not None:
            return await self._vendor_said_no(service, error, query, browser=browser, source=source)
        if state is None or code is None:
            await app.refusals.record(
                service, None, reason=Reason.MALFORMED_REQUEST, status=400, step="callback",
                why="incomplete", source=source,
            )  # fmt: skip
            return page(
                400,
                "This address is incomplete",
                "the answer from the vendor lacks its state or its code",
                "start the connection again from the connect link",
            )
        flow, verifier = await app.flows.complete(
            state, service=service, browser_secret=browser, source=source
        )
        clear = [("set-cookie", app._cookie(service, None))]
        try:
            user = await self._checks(scope, service, flow.user_id, query.get("iss"))
        except VendorUnavailable:  # its metadata, for the issuer
            return with_headers(
                await vendor_down(app.refusals, service, flow.user_id, "callback"), clear
            )
        except RequestRefused as refused:
            return with_headers(refusal_page(refused), clear)
        try:
            tokens = await app.vendors[service].exchange_code(
                code, redirect_uri=app.redirect_uri(service), code_verifier=verifier.reveal()
            )
        except VendorUnavailable:
            return with_headers(
                await vendor_down(app.refusals, service, flow.user_id, "token"), clear
            )
        except VendorRefused as refused:
            await app.refusals.record(
                service, flow.user_id, reason=Reason.CONNECT_REFUSED, status=400, step="token",
                why="code_refused", vendor_error=_safe_error(refused.error),
            )  # fmt: skip
            shown = page(
                400,
                "The connection could not be completed",
                f"{service} did not accept the authorization (it may have expired or been "
                "used already).",
                "start the connection again from the connect link",
            )
            return with_headers(shown, clear)
        await app.accounts.connect(service, flow.user_id, tokens)
        done = page(
            200,
            "Connected",
            f"Your {service} account is connected to agentguard user "
            f"{user_label(flow.user_id, user.name)}: agents acting for {flow.user_id} use it "
            "from now on. You can close this page.",
        )
        return with_headers(done, clear)

    async def _checks(self, scope: Scope, service: str, user_id: str, iss: str | None) -> User:
        """The authorization came from the vendor's own server (RFC 9207), is finished by
        the user who started it (with ``identify``), and that user may still connect."""
        wrong = await self._issuer_fault(service, iss)
        if wrong is not None:
            raise await self.app.refusals.refuse(
                ISSUER_WRONG.format(service=service), service, user_id, "callback", wrong
            )
        if self.app.identify is not None:
            current = await self.app.identify(scope)
            if current is not None and current != user_id:
                raise await self.app.refusals.refuse(
                    _OTHER_FINISHER, service, user_id, "callback", "other_user", signed_in=current
                )
        return await self.app._may_connect(service, user_id, "callback")

    async def _issuer_fault(self, service: str, iss: str | None) -> str | None:
        """Why the response's ``iss`` is not acceptable (RFC 9207 §2.4), or ``None``.

        Compared exactly with the issuer the vendor client knows (configured, or its
        discovered metadata's); required when that metadata says
        ``authorization_response_iss_parameter_supported``. Unknown issuer: ignored.
        """
        vendor = self.app.vendors[service]
        expected = getattr(vendor, "expected_issuer", None)
        if expected is not None:
            issuer, required = await expected()
        else:
            issuer, required = getattr(getattr(vendor, "config", None), "issuer", None), False
        if issuer is None:
            return None
        if iss is None:
            return "issuer_missing" if required else None
        return None if iss == issuer else "issuer_mismatch"

    async def _vendor_said_no(
        self,
        service: str,
        error: str,
        query: Mapping[str, str],
        *,
        browser: str | None,
        source: str | None,
    ) -> Answer:
        """The vendor redirected back with ``error=``: use the state up and say so.

        Audited once, with the status sent: the flows record a refused state (and its refusal
        is the answer: the error cannot be told to be about a flow of this browser);
        otherwise the vendor's error is recorded here (with the user when the state was ours,
        counted when there was none).
        """
        code = _safe_error(error)
        state = query.get("state")
        if state is None:
            shown = vendor_error_page(service, code)
            await self._vendor_error(service, None, code, shown.status, source)
            return shown
        flow, _ = await self.app.flows.complete(
            state, service=service, browser_secret=browser, source=source
        )
        clear = [("set-cookie", self.app._cookie(service, None))]
        try:
            wrong = await self._issuer_fault(service, query.get("iss"))
        except VendorUnavailable:  # nothing is connected either way: report the answer
            wrong = None
        if wrong is not None:  # not the vendor's own server: its words are not shown
            refused = await self.app.refusals.refuse(
                ISSUER_WRONG.format(service=service), service, flow.user_id, "authorize", wrong
            )
            return with_headers(refusal_page(refused), clear)
        shown = vendor_error_page(service, code)
        await self._vendor_error(service, flow.user_id, code, shown.status, source)
        return with_headers(shown, clear)

    async def _vendor_error(
        self, service: str, user_id: str | None, code: str, status: int, source: str | None
    ) -> None:
        await self.app.refusals.record(
            service, user_id, reason=Reason.CONNECT_REFUSED, status=status, step="authorize",
            why="vendor_error", vendor_error=code, source=source,
        )  # fmt: skip


async def vendor_down(refusals: RefusalLog, service: str, user_id: str, step: str) -> Answer:
    """The vendor could not be reached for ``step``: recorded, and a 502 page."""
    await refusals.record(
        service, user_id, reason=Reason.VENDOR_UNAVAILABLE, status=502, step=step,
        why="vendor_unavailable",
    )  # fmt: skip
    return page(
        502,
        "Not connected",
        f"{service} could not be reached to complete the connection.",
        "try again in a few minutes (a connect link is used once: ask for a new one)",
    )


def _safe_error(error: str) -> str:
    """The vendor's error code if it looks like one (RFC 6749 codes), else ``other``."""
    return error if _VENDOR_ERROR.match(error) else "other"
