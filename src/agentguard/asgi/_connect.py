"""The connect flow a human walks through in a browser, as one ASGI app.

Paths are relative to the app's mount (``/connect`` by default):

- ``GET /{service}?ticket=ag_ct_...``: a confirmation page (Connect / Disconnect) that names
  the agentguard user the link is for and warns that whoever continues connects their own
  vendor account to that user. It does not use the ticket up: mail scanners and link previews
  open links before people do.
- ``POST /{service}`` (the page's form; same-origin only): identifies the human by the ticket,
  which it uses up, or by ``identify`` (the application's own session). ``action=connect``
  starts the authorization (``state``, PKCE S256), sets the browser-binding cookie and
  answers 303 to the vendor; ``action=disconnect`` removes the connection.
- ``GET /{service}/callback?state=...&code=...``: the vendor's redirect. The state must be
  this server's, unused, for this service, and come back to the browser that started it; an
  ``iss`` must be the vendor's issuer (RFC 9207, required when its metadata promises it); the
  code is exchanged with the PKCE verifier and the tokens stored for the user.

With ``identify``, a link works only for the signed-in user it was issued for (page and form).
Every step re-reads the user from the directory: a user disabled, deleted or whose account was
closed since the link was issued connects nothing.

The binding cookie is ``__Host-agentguard_connect_{service}`` on an https origin: browsers keep
a ``__Host-`` cookie only if this very host set it ``Secure``, with ``Path=/`` and no
``Domain``, so a sibling subdomain (or a plain-http answer injected on the network) cannot
plant its own flow's cookie in the victim's browser (login CSRF by cookie tossing). One name per
service keeps two flows of one browser apart. On a plain-http origin (loopback and tests only)
it is ``agentguard_connect_{service}``, path the service's pages: plain http has no protection
against cookie tossing. A callback that carries the cookie more than once (one of them tossed)
is refused, whatever the state: it cannot tell which is its own. Its name is matched byte for
byte, trimmed of SP and HTAB only (RFC 6265 §5.2): a browser does not see
``\\xa0__Host-agentguard_connect_crm`` as a ``__Host-`` cookie, so a sibling host may set it,
and a callback that carries such a look-alike is refused the same way.

The form's body must arrive within :attr:`ConnectApp.body_idle` seconds of silence and
:attr:`ConnectApp.body_total` seconds in all (408 past either): a browser sends it at once.

Only services configured ``credentials="connected"`` with a vendor client exist here (any
other name is 404). Every answer is a small HTML page (or the 303) with ``Cache-Control:
no-store``, no framing, no script and no referrer; a refusal says what went wrong in words a
person can act on, never with the link, state, code or a token in it. Refusals are audited
(:mod:`agentguard.asgi._connect_audit`): one event each when they used a link or an
authorization up, else counted per client address (those that name no one, and the page's,
which uses nothing up: one link opened in a loop does not grow the audit log).
Store or audit outages answer 503, the vendor's outage 502; never a 500.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Protocol

from agentguard._reasons import Reason
from agentguard._secret import Secret
from agentguard.asgi._connect_audit import RefusalLog, client_of
from agentguard.asgi._connect_callback import Callback, vendor_down
from agentguard.asgi._connect_pages import Answer, confirm_page, page, refusal_page, user_label
from agentguard.asgi._connect_request import (
    is_same_origin,
    public_origin_of,
    read_query,
    receive_within,
)
from agentguard.asgi._forms import read_form
from agentguard.asgi._responses import answer_lifespan, send_raw
from agentguard.asgi._scope import route_path
from agentguard.asgi._types import Receive, Scope, Send
from agentguard.connect._errors import VendorRefused, VendorUnavailable
from agentguard.connect._flow_errors import LINK_MALFORMED, standing_refused
from agentguard.connect._flow_tokens import is_ticket
from agentguard.connect._standing import user_standing
from agentguard.errors import (
    ConfigurationError,
    InvalidRequest,
    MethodNotAllowed,
    RequestRefused,
    ServiceUnavailable,
)

if TYPE_CHECKING:
    from agentguard._guard import Guard
    from agentguard._model import ConnectedAccount, User
    from agentguard.connect._flows import ConnectFlows
    from agentguard.connect._tokens import VendorTokens

__all__ = ["COOKIE_PREFIX", "HOST_PREFIX", "ConnectApp"]

logger = logging.getLogger("agentguard.connect")

COOKIE_PREFIX = "agentguard_connect_"
"""The browser-binding cookie's name, the service's name after it (plain http: no prefix)."""
HOST_PREFIX = "__Host-"
"""Before the cookie's name on an https origin: a cookie no other host can set."""
MAX_FORM_BYTES = 4096
_NOT_SIGNED_IN = "sign in to this site first, then open this page again"
_NO_LINK = "open the connect link your operator sent you (this address alone is not enough)"
_OTHER_USER = "this connect link is for another user than the one signed in here"
_SIGN_IN_AS = "this connect link is for agentguard user {user}: sign in here as {user} first"
_CROSS_SITE = (
    "this form must be sent from this site's own connect page; open the connect link again "
    "(your browser did not say where the form came from, or it came from another site)"
)

Identify = Callable[[Scope], Awaitable[str | None]]


class VendorLike(Protocol):
    """What the app needs of a :class:`~agentguard.connect.VendorClient`.

    The callback also asks ``await vendor.expected_issuer()`` (``(issuer, iss_required)``,
    RFC 9207) when the vendor has it, else reads ``vendor.config.issuer`` (``iss`` then
    optional); a vendor with neither has its ``iss`` ignored.
    """

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
        body_idle: longest wait, in seconds, for the next part of the form's body (408).
        body_total: longest time, in seconds, to receive the form's whole body (408).
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
        body_idle: float = 10.0,
        body_total: float = 30.0,
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
        if not (body_idle > 0 and body_total > 0):
            raise ConfigurationError("body_idle and body_total are positive numbers of seconds")
        self.body_idle = body_idle
        self.body_total = body_total
        for name in self.vendors:
            service = guard.services.get(name)
            if service is None or service.credentials != "connected":
                raise ConfigurationError(
                    f'vendor client for {name}, which is not a credentials="connected" service'
                )
        self._secure = self.public_origin.startswith("https://")
        self.refusals = RefusalLog(guard.audit, guard.clock)
        self._callback = Callback(self)

    def __repr__(self) -> str:
        return f"ConnectApp(services={sorted(self.vendors)}, origin={self.public_origin!r})"

    def redirect_uri(self, service: str) -> str:
        """The callback the vendor sends the browser back to for ``service``."""
        return f"{self.public_origin}{self.mount}/{service}/callback"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await answer_lifespan(receive, send)
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
            return await self._callback.handle(scope, service)
        if method == "GET":
            return await self._confirm(scope, service)
        if method == "POST":
            return await self._post(scope, receive, service)
        raise MethodNotAllowed(("GET", "POST"))

    async def _confirm(self, scope: Scope, service: str) -> Answer:
        # Nothing is used up here, so every refusal is counted per address (never its own
        # event): one link opened in a loop must not grow the audit log by an event a request.
        source = client_of(scope)
        ticket = read_query(scope).get("ticket")
        if ticket is not None and not is_ticket(ticket):  # never looked up, never audited
            return page(400, "This link does not work", LINK_MALFORMED)
        if ticket is not None:
            flow = await self.flows.inspect_ticket(ticket, service=service, source=source)
            user_id = flow.user_id
            await self._signed_in_as(scope, service, user_id, "page", counted=True, source=source)
        elif self.identify is None:
            return page(400, "A connect link is needed", _NO_LINK)
        else:
            signed_in = await self.identify(scope)
            if signed_in is None:
                return page(403, "Please sign in", _NOT_SIGNED_IN)
            user_id = signed_in
        user = await self._may_connect(service, user_id, "page", counted=True, source=source)
        body = confirm_page(service, f"{self.mount}/{service}", ticket, user_id, user.name)
        # The form must carry its Origin: under "no-referrer" browsers send "Origin: null"
        # with it. "same-origin" sends this page's address (and the ticket in it) to this
        # server only, never to another site.
        return Answer(200, body, [("referrer-policy", "same-origin")])

    async def _post(self, scope: Scope, receive: Receive, service: str) -> Answer:
        source = client_of(scope)
        if not is_same_origin(scope, self.public_origin):
            raise await self.refusals.refuse(
                _CROSS_SITE, service, None, "post", "cross_site", source=source
            )
        bounded = receive_within(receive, idle=self.body_idle, total=self.body_total)
        try:
            form = await read_form(scope, bounded, MAX_FORM_BYTES)
        except InvalidRequest as error:  # its type, size (413), encoding, a field twice, 408
            await self.refusals.record(
                service, None, reason=error.reason, status=error.status, step="post",
                why="bad_form", source=source,
            )  # fmt: skip
            raise
        action = form.get("action")
        if action not in ("connect", "disconnect"):
            await self.refusals.record(
                service, None, reason=Reason.MALFORMED_REQUEST, status=400, step="post",
                why="unknown_action", source=source,
            )  # fmt: skip
            return page(400, "This request is not valid", "choose Connect or Disconnect")
        user_id, used_up = await self._who(scope, service, form.get("ticket"), source)
        # a signed-in user's form uses nothing up: its refusal is counted, like the page's
        user = await self._may_connect(service, user_id, "post", counted=not used_up, source=source)
        label = user_label(user_id, user.name)
        if action == "disconnect":
            removed = await self.accounts.disconnect(service, user_id, by="user")
            if removed:
                return page(
                    200,
                    "Disconnected",
                    f"Your {service} account is disconnected from agentguard user {label}.",
                )
            return page(
                200,
                "Nothing to disconnect",
                f"No {service} account was connected to agentguard user {label}.",
            )
        authorization = await self.flows.begin(service, user_id)
        try:
            location = await self.vendors[service].authorization_url(
                redirect_uri=self.redirect_uri(service),
                state=authorization.state.reveal(),
                code_challenge=authorization.code_challenge,
            )
        except (VendorUnavailable, VendorRefused):  # discovery failed, or its answer did
            return await vendor_down(self.refusals, service, user_id, "authorize")
        return Answer(
            303,
            b"",
            [
                ("content-type", "text/plain; charset=utf-8"),
                ("location", location),
                ("set-cookie", self._cookie(service, authorization.browser_secret)),
            ],
        )

    async def _who(
        self, scope: Scope, service: str, ticket: str | None, source: str | None
    ) -> tuple[str, bool]:
        """The human's user id, the ticket's (used up here) or the signed-in user's, and
        whether a ticket was used up."""
        if ticket is not None:
            flow = await self.flows.redeem_ticket(ticket, service=service, source=source)
            await self._signed_in_as(scope, service, flow.user_id, "post")
            return flow.user_id, True
        if self.identify is None:
            raise await self.refusals.refuse(
                _NO_LINK, service, None, "post", "no_ticket", source=source
            )
        user_id = await self.identify(scope)
        if user_id is None:
            raise await self.refusals.refuse(
                _NOT_SIGNED_IN, service, None, "post", "not_signed_in", source=source
            )
        return user_id, False

    async def _signed_in_as(
        self,
        scope: Scope,
        service: str,
        user_id: str,
        step: str,
        *,
        counted: bool = False,
        source: str | None = None,
    ) -> None:
        """With ``identify``, a link is for its own user only: that user must be signed in.

        ``counted``: nothing was used up (the page), so a refusal is counted under ``source``.
        """
        if self.identify is None:
            return
        current = await self.identify(scope)
        if current is None:
            raise await self.refusals.refuse(
                _SIGN_IN_AS.format(user=user_id), service, user_id, step, "not_signed_in",
                source=source, counted=counted,
            )  # fmt: skip
        if current != user_id:
            raise await self.refusals.refuse(
                _OTHER_USER, service, user_id, step, "other_user", signed_in=current,
                source=source, counted=counted,
            )  # fmt: skip

    async def _may_connect(
        self,
        service: str,
        user_id: str,
        step: str,
        *,
        counted: bool = False,
        source: str | None = None,
    ) -> User:
        """The user, read live: refused (audited) unless they exist, are enabled and their
        account is active. ``counted``: the request used nothing up, so a refusal is counted
        under ``source`` rather than appended as its own event."""
        standing = await user_standing(self.guard.store, user_id)
        if standing.problem is None and standing.user is not None:
            return standing.user
        problem = standing.problem or Reason.UNKNOWN_USER
        error = standing_refused(problem, service=service, user_id=user_id)
        await self.refusals.record(
            service, user_id, reason=problem, status=error.status, step=step, why=problem.value,
            source=source, counted=counted,
        )  # fmt: skip
        raise error

    def cookie_name(self, service: str) -> str:
        """The browser-binding cookie's name for ``service`` (see the module docstring)."""
        name = COOKIE_PREFIX + service
        return HOST_PREFIX + name if self._secure else name

    def _cookie(self, service: str, secret: Secret | None) -> str:
        """The browser-binding cookie for ``service``'s callback (``None``: clear it).

        https: ``__Host-``, ``Secure``, ``Path=/`` (which ``__Host-`` requires; the proxy
        never forwards a browser's cookies upstream) and no ``Domain``; plain http: its path
        the service's pages only. Both ``HttpOnly`` and ``SameSite=Lax`` (the vendor's redirect
        back is a top-level GET, which Lax lets carry it).
        """
        value, age = ("", 0) if secret is None else (
            secret.reveal(), int(self.flows.state_ttl.total_seconds())
        )  # fmt: skip
        path = "/" if self._secure else f"{self.mount}/{service}"
        cookie = (
            f"{self.cookie_name(service)}={value}; Max-Age={age}; Path={path}; HttpOnly; "
            "SameSite=Lax"
        )
        return cookie + "; Secure" if self._secure else cookie
