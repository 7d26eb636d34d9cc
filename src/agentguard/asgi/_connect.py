"""The connect flow a human walks through in a browser, as one ASGI app.

Paths are relative to the app's mount (``/connect`` by default):

- ``GET /{service}?ticket=ag_ct_...``: a confirmation page (Connect / Disconnect). It does
  not use the ticket up: mail scanners and link previews open links before people do.
- ``POST /{service}`` (the page's form; same-origin only): identifies the human by the ticket,
  which it uses up, or by ``identify`` (the application's own session). ``action=connect``
  starts the authorization (``state``, PKCE S256), sets the browser-binding cookie and
  answers 303 to the vendor; ``action=disconnect`` removes the connection.
- ``GET /{service}/callback?state=...&code=...``: the vendor's redirect. The state must be
  this server's, unused, for this service, and come back to the browser that started it; the
  code is exchanged with the PKCE verifier and the tokens stored for the user.

Only services configured ``credentials="connected"`` with a vendor client exist here (any
other name is 404). Every answer is a small HTML page (or the 303) with ``Cache-Control:
no-store``, no framing, no script and no referrer; a refusal says what went wrong in words a
person can act on, never with the link, state, code or a token in it. Store or audit outages
answer 503, the vendor's outage 502; never a 500.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Protocol

from agentguard._reasons import Reason
from agentguard._secret import Secret
from agentguard.asgi._connect_pages import (
    Answer,
    confirm_page,
    page,
    refusal_page,
    vendor_error_page,
    with_headers,
)
from agentguard.asgi._connect_request import (
    is_same_origin,
    public_origin_of,
    read_cookie,
    read_query,
)
from agentguard.asgi._forms import read_form
from agentguard.asgi._responses import send_raw
from agentguard.asgi._scope import route_path
from agentguard.asgi._types import Receive, Scope, Send
from agentguard.audit._events import Action, AuditEvent, Decision
from agentguard.connect._errors import VendorRefused, VendorUnavailable
from agentguard.connect._flow_errors import LINK_MALFORMED, ConnectRefused
from agentguard.connect._flow_tokens import is_ticket
from agentguard.errors import (
    ConfigurationError,
    MethodNotAllowed,
    RequestRefused,
    ServiceUnavailable,
)

if TYPE_CHECKING:
    from agentguard._guard import Guard
    from agentguard._model import ConnectedAccount
    from agentguard.connect._flows import ConnectFlows
    from agentguard.connect._tokens import VendorTokens

__all__ = ["COOKIE_NAME", "ConnectApp"]

logger = logging.getLogger("agentguard.connect")

COOKIE_NAME = "agentguard_connect"
MAX_FORM_BYTES = 4096
_VENDOR_ERROR = re.compile(r"[a-z_]{1,64}\Z")
_NOT_SIGNED_IN = "sign in to this site first, then open this page again"
_NO_LINK = "open the connect link your operator sent you (this address alone is not enough)"
_OTHER_USER = "this connect link is for another user than the one signed in here"
_CROSS_SITE = (
    "this form must be sent from this site's own connect page; open the connect link again "
    "(your browser did not say where the form came from, or it came from another site)"
)

Identify = Callable[[Scope], Awaitable[str | None]]


class VendorLike(Protocol):
    """What the app needs of a :class:`~agentguard.connect.VendorClient`."""

    async def authorization_url(
        self, *, redirect_uri: str, state: str, code_challenge: str
    ) -> str: ...

    async def exchange_code(
        self, code: str, *, redirect_uri: str, code_verifier: str
    ) -> VendorTokens: ...


class AccountsLike(Protocol):
    """What the app needs of :class:`~agentguard.connect.ConnectedAccounts`."""

    async def connect(
        self, service: str, user_id: str, tokens: VendorTokens
    ) -> ConnectedAccount: ...

    async def disconnect(self, service: str, user_id: str, *, by: str) -> bool: ...


class _NotFound(Exception):
    """No such page (an unknown or not connected service, another path)."""


class ConnectApp:
    """ASGI app for the browser side of connected accounts (see the module docstring).

    Args:
        guard: its services (which are ``credentials="connected"``), clock and audit log.
        flows: the tickets and authorizations (:class:`~agentguard.connect.ConnectFlows`).
        accounts: stores connections (:class:`~agentguard.connect.ConnectedAccounts`).
        vendors: each connected service's :class:`~agentguard.connect.VendorClient`.
        public_origin: the gateway's origin as browsers see it (``https://gw.example``): the
            redirect URI is ``{public_origin}{mount}/{service}/callback``, and forms are
            accepted only from this origin.
        mount: where the app is mounted, as browsers see it.
        identify: for applications with their own sign-in: ``await identify(scope)`` is the
            signed-in user's id, or ``None``. Without it, only connect links identify people.
    """

    def __init__(
        self,
        guard: Guard,
        *,
        flows: ConnectFlows,
        accounts: AccountsLike,
        vendors: Mapping[str, VendorLike],
        public_origin: str,
        mount: str = "/connect",
        identify: Identify | None = None,
    ) -> None:
        self.guard = guard
        self.flows = flows
        self.accounts = accounts
        self.vendors = dict(vendors)
        self.public_origin = public_origin_of(public_origin)
        if mount and (not mount.startswith("/") or mount.endswith("/") or "//" in mount):
            raise ConfigurationError("mount is a path such as /connect (no trailing slash)")
        self.mount = mount
        self.identify = identify
        for name in self.vendors:
            service = guard.services.get(name)
            if service is None or service.credentials != "connected":
                raise ConfigurationError(
                    f'vendor client for {name}, which is not a credentials="connected" service'
                )
        self._secure = self.public_origin.startswith("https://")

    def __repr__(self) -> str:
        return f"ConnectApp(services={sorted(self.vendors)}, origin={self.public_origin!r})"

    def redirect_uri(self, service: str) -> str:
        """The callback the vendor sends the browser back to for ``service``."""
        return f"{self.public_origin}{self.mount}/{service}/callback"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await _lifespan(receive, send)
            return
        if kind == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        if kind != "http":
            raise ValueError(f"ConnectApp does not handle {kind!r} scopes")
        try:
            answer = await self._handle(scope, receive)
        except _NotFound:
            answer = page(404, "Not found", "There is no connect page at this address.")
        except RequestRefused as error:
            answer = refusal_page(error)
        except Exception as error:  # never a 500: a bug is logged and refused like an outage
            logger.error(
                "connect endpoint failed: %s (refused with 503)",
                type(error).__name__,
                exc_info=error,
            )
            answer = refusal_page(ServiceUnavailable())
        await send_raw(send, answer.status, answer.all_headers(), answer.body)

    async def _handle(self, scope: Scope, receive: Receive) -> Answer:
        parts = route_path(scope).split("/")
        if len(parts) not in (2, 3) or parts[0] != "" or parts[-1] == "":
            raise _NotFound
        service = parts[1]
        config = self.guard.services.get(service)
        if config is None or config.credentials != "connected" or service not in self.vendors:
            raise _NotFound
        method: str = scope["method"]
        if len(parts) == 3:
            if parts[2] != "callback":
                raise _NotFound
            if method != "GET":
                raise MethodNotAllowed(("GET",))
            return await self._callback(scope, service)
        if method == "GET":
            return await self._confirm(scope, service)
        if method == "POST":
            return await self._post(scope, receive, service)
        raise MethodNotAllowed(("GET", "POST"))

    async def _confirm(self, scope: Scope, service: str) -> Answer:
        ticket = read_query(scope).get("ticket")
        if ticket is not None and not is_ticket(ticket):
            return page(400, "This link does not work", LINK_MALFORMED)
        if ticket is None:
            if self.identify is None:
                return page(400, "A connect link is needed", _NO_LINK)
            if await self.identify(scope) is None:
                return page(403, "Please sign in", _NOT_SIGNED_IN)
        body = confirm_page(service, f"{self.mount}/{service}", ticket)
        # The form must carry its Origin: under "no-referrer" browsers send "Origin: null"
        # with it. "same-origin" sends this page's address (and the ticket in it) to this
        # server only, never to another site.
        return Answer(200, body, [("referrer-policy", "same-origin")])

    async def _post(self, scope: Scope, receive: Receive, service: str) -> Answer:
        if not is_same_origin(scope, self.public_origin):
            raise await self._refuse(_CROSS_SITE, service, None, "post", "cross_site")
        form = await read_form(scope, receive, MAX_FORM_BYTES)
        action = form.get("action")
        if action not in ("connect", "disconnect"):
            return page(400, "This request is not valid", "choose Connect or Disconnect")
        user_id = await self._who(scope, service, form.get("ticket"))
        if action == "disconnect":
            removed = await self.accounts.disconnect(service, user_id, by="user")
            if removed:
                return page(200, "Disconnected", f"Your {service} account is disconnected.")
            return page(200, "Nothing to disconnect", f"No {service} account was connected.")
        authorization = await self.flows.begin(service, user_id)
        try:
            location = await self.vendors[service].authorization_url(
                redirect_uri=self.redirect_uri(service),
                state=authorization.state.reveal(),
                code_challenge=authorization.code_challenge,
            )
        except (VendorUnavailable, VendorRefused):  # discovery failed, or its answer did
            return await self._vendor_down(service, user_id, "authorize")
        return Answer(
            303,
            b"",
            [
                ("content-type", "text/plain; charset=utf-8"),
                ("location", location),
                ("set-cookie", self._cookie(service, authorization.browser_secret)),
            ],
        )

    async def _who(self, scope: Scope, service: str, ticket: str | None) -> str:
        """The human's user id: the ticket's (used up here) or the signed-in user's."""
        if ticket is not None:
            flow = await self.flows.redeem_ticket(ticket, service=service)
            if self.identify is not None:
                current = await self.identify(scope)
                if current is not None and current != flow.user_id:
                    raise await self._refuse(
                        _OTHER_USER, service, flow.user_id, "post", "other_user"
                    )
            return flow.user_id
        if self.identify is None:
            raise await self._refuse(_NO_LINK, service, None, "post", "no_ticket")
        user_id = await self.identify(scope)
        if user_id is None:
            raise await self._refuse(_NOT_SIGNED_IN, service, None, "post", "not_signed_in")
        return user_id

    async def _callback(self, scope: Scope, service: str) -> Answer:
        query = read_query(scope)
        state, code, error = query.get("state"), query.get("code"), query.get("error")
        browser = read_cookie(scope, COOKIE_NAME)
        if error is not None:
            return await self._vendor_said_no(service, error, state, browser)
        if state is None or code is None:
            return page(
                400,
                "This address is incomplete",
                "the answer from the vendor lacks its state or its code",
                "start the connection again from the connect link",
            )
        flow, verifier = await self.flows.complete(state, service=service, browser_secret=browser)
        clear = [("set-cookie", self._cookie(service, None))]
        if self.identify is not None:
            current = await self.identify(scope)
            if current is not None and current != flow.user_id:
                refused = await self._refuse(
                    "the connection must be finished by the user who started it",
                    service, flow.user_id, "callback", "other_user",
                )  # fmt: skip
                return with_headers(refusal_page(refused), clear)
        try:
            tokens = await self.vendors[service].exchange_code(
                code, redirect_uri=self.redirect_uri(service), code_verifier=verifier.reveal()
            )
        except VendorUnavailable:
            return with_headers(await self._vendor_down(service, flow.user_id, "token"), clear)
        except VendorRefused as refused:
            await self._recordrefusal_page(
                service, flow.user_id, reason=Reason.CONNECT_REFUSED, status=400,
                step="token", why="code_refused", vendor_error=_safe_error(refused.error),
            )  # fmt: skip
            shown = page(
                400,
                "The connection could not be completed",
                f"{service} did not accept the authorization (it may have expired or been "
                "used already).",
                "start the connection again from the connect link",
            )
            return with_headers(shown, clear)
        await self.accounts.connect(service, flow.user_id, tokens)
        done = page(
            200, "Connected", f"Your {service} account is connected. You can close this page."
        )
        return with_headers(done, clear)

    async def _vendor_said_no(
        self, service: str, error: str, state: str | None, browser: str | None
    ) -> Answer:
        """The vendor redirected back with ``error=``: use the state up and say so."""
        user_id = None
        clear: list[tuple[str, str]] = []
        if state is not None:
            try:
                flow, _ = await self.flows.complete(state, service=service, browser_secret=browser)
            except ConnectRefused:
                pass  # recorded by the flows; the vendor's refusal is what the page reports
            else:
                user_id = flow.user_id
                clear = [("set-cookie", self._cookie(service, None))]
        code = _safe_error(error)
        await self._recordrefusal_page(
            service, user_id, reason=Reason.CONNECT_REFUSED, status=403, step="authorize",
            why="vendor_error", vendor_error=code,
        )  # fmt: skip
        return with_headers(vendor_error_page(service, code), clear)

    async def _vendor_down(self, service: str, user_id: str, step: str) -> Answer:
        await self._recordrefusal_page(
            service, user_id, reason=Reason.VENDOR_UNAVAILABLE, status=502, step=step,
            why="vendor_unavailable",
        )  # fmt: skip
        return page(
            502,
            "Not connected",
            f"{service} could not be reached to complete the connection.",
            "try again in a few minutes (a connect link is used once: ask for a new one)",
        )

    def _cookie(self, service: str, secret: Secret | None) -> str:
        """The browser-binding cookie for ``service``'s callback (``None``: clear it)."""
        value, age = ("", 0) if secret is None else (
            secret.reveal(), int(self.flows.state_ttl.total_seconds())
        )  # fmt: skip
        cookie = (
            f"{COOKIE_NAME}={value}; Max-Age={age}; Path={self.mount}/{service}; HttpOnly; "
            "SameSite=Lax"
        )
        return cookie + "; Secure" if self._secure else cookie

    async def _refuse(
        self, description: str, service: str, user_id: str | None, step: str, why: str
    ) -> ConnectRefused:
        error = ConnectRefused(description, service=service, user_id=user_id)
        await self._recordrefusal_page(
            service, user_id, reason=error.reason, status=error.status, step=step, why=why
        )
        return error

    async def _recordrefusal_page(
        self,
        service: str,
        user_id: str | None,
        *,
        reason: Reason,
        status: int,
        step: str,
        why: str,
        vendor_error: str | None = None,
    ) -> None:
        detail: dict[str, str | int | bool | None] = {"step": step, "why": why}
        if vendor_error is not None:
            detail["vendor_error"] = vendor_error
        await self.guard.audit.record(
            AuditEvent(
                action=Action.CONNECTION_REFUSE,
                ts=self.guard.clock.now(),
                decision=Decision.DENY,
                reason=reason.value,
                service=service,
                user_id=user_id,
                status=status,
                detail=detail,
            )
        )


def _safe_error(error: str) -> str:
    """The vendor's error code if it looks like one (RFC 6749 codes), else ``other``."""
    return error if _VENDOR_ERROR.match(error) else "other"


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
