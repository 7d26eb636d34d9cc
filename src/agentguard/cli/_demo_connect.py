"""The connected-account scene of ``agentguard demo``: Alice connects her own mailbox over OAuth.

The mail vendor (a :class:`~agentguard.testing.FakeOAuthVendor`, in-process) is a
``credentials="connected"`` service: there is no operator key for it, each user connects their
own account. The agent is refused ``connection_required`` until Alice has; an operator issues a
one-time link; Alice's "browser" opens it, confirms, consents at the vendor and comes back; the
agent's next call carries Alice's own vendor token, which the agent never sees.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

from agentguard._services import ServiceConfig
from agentguard.asgi._connect import ConnectApp
from agentguard.asgi._proxy import ProxyApp
from agentguard.connect import ConnectedAccounts, ConnectFlows, VendorClient
from agentguard.credentials import CredentialSwapper, CredentialVault, KeyRing
from agentguard.testing._oauth_vendor import FakeOAuthVendor

if TYPE_CHECKING:
    from agentguard._clock import Clock
    from agentguard._guard import Guard
    from agentguard.cli._demo import _Teller
    from agentguard.storage import SQLiteStore

__all__ = ["MAIL_ORIGIN", "Mail", "mail_service", "set_up_mail", "tell_connect"]

ORIGIN = "http://demo.test"
MAIL_ORIGIN = "https://mail.vendor.test"
INBOX = "/vendors/mail/inbox"


def mail_service(vendor: FakeOAuthVendor) -> ServiceConfig:
    """The mail vendor as a connected service: each user's own account, never a shared key."""
    return ServiceConfig(
        name="mail",
        base_url=vendor.api_url,
        credentials="connected",
        oauth=vendor.oauth_config(),
    )


@dataclass
class Mail:
    """The fake mail vendor and the parts that connect users to it."""

    vendor: FakeOAuthVendor
    client: VendorClient
    flows: ConnectFlows
    connect: ConnectApp
    proxy: ProxyApp

    async def aclose(self) -> None:
        await self.proxy.aclose()
        await self.client.aclose()


def mail_vendor(clock: Clock) -> FakeOAuthVendor:
    """The mail vendor, with the accounts of two people."""
    return FakeOAuthVendor(
        name="MailCo",
        users=("alice@mailco", "bob@mailco"),
        scopes=("mail.read",),
        clock=clock,
        base_url=MAIL_ORIGIN,
    )


def set_up_mail(guard: Guard, store: SQLiteStore, vendor: FakeOAuthVendor) -> Mail:
    """The vendor client, the connect flow, the users' connections and the mail proxy."""
    keyring = KeyRing.generate()
    transport = httpx.ASGITransport(app=vendor)
    service = guard.services["mail"]
    client = VendorClient(
        "mail",
        vendor.oauth_config(),
        client_secret=vendor.client_secret,
        transport=transport,
        clock=guard.clock,
    )
    flows = ConnectFlows(store, keyring, clock=guard.clock, audit=guard.audit)
    accounts = ConnectedAccounts(
        store,
        keyring,
        {"mail": client},
        clock=guard.clock,
        audit=guard.audit,
        connect_uri=lambda name: f"{ORIGIN}/connect/{name}",
    )
    connect = ConnectApp(
        guard, flows=flows, accounts=accounts, vendors={"mail": client}, public_origin=ORIGIN
    )
    vault = CredentialVault(store, keyring, clock=guard.clock)
    swapper = CredentialSwapper(vault, connections=accounts, clock=guard.clock)
    proxy = ProxyApp(guard, service, swapper, transport=transport)
    return Mail(vendor, client, flows, connect, proxy)


async def tell_connect(
    tell: _Teller, http: httpx.AsyncClient, mail: Mail, headers: dict[str, str]
) -> list[str]:
    """Tell the scene; return the secrets it handled (the one-time link's ticket and the
    gateway's OAuth client secret), which the story checks are absent from the audit log."""
    tell.title("The mailbox is Alice's own: each user connects their own vendor account")
    tell.say(f"GET {INBOX}")
    refused = await http.get(INBOX, headers=headers)
    tell.result(refused)
    tell.say(f"no shared key to fall back on; the human is sent to {refused.json()['connect_uri']}")

    ticket, _ = await mail.flows.issue_ticket("mail", "alice", by="maria")
    link = f"{ORIGIN}/connect/mail?ticket={ticket.reveal()}"
    tell.say(f"operator maria sends Alice a one-time link: {link[:46]}…")
    mail.vendor.auto_approve = "alice@mailco"  # Alice signs in at MailCo and allows
    page = await http.get(link)
    found = re.search(r'name="ticket" value="([^"]+)"', page.text)
    form = {"ticket": found.group(1) if found else "", "action": "connect"}
    started = await http.post("/connect/mail", data=form, headers={"Origin": ORIGIN})
    tell.say(f"Alice presses Connect: {started.status_code}, off to MailCo with state and PKCE")
    vendor_url = httpx.URL(started.headers.get("location", ""))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=mail.vendor)) as browser:
        consented = await browser.get(vendor_url)
    back = httpx.URL(consented.headers.get("location", ""))
    done = await http.get(back.raw_path.decode())
    verdict = "connected" if done.status_code == 200 else f"refused ({done.status_code})"
    tell.say(f"she allows at MailCo and comes back: {verdict}; tokens sealed in the store")

    tell.say(f"GET {INBOX}   (the same placeholder key as before)")
    answer = await http.get(INBOX, headers=headers)
    tell.result(answer)
    body = answer.json() if answer.status_code == 200 else {}
    tell.say(
        f"MailCo saw Alice's own token (account {body.get('vendor_user')}); the agent never held it"
    )
    return [ticket.reveal(), mail.vendor.client_secret.reveal()]
