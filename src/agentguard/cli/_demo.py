"""``agentguard demo``: the story so far, run in-process and told step by step.

A guarded Starlette app with a ``/crm`` service, the OAuth endpoints at ``/oauth``, the
embedded SQLite store in a temporary directory on a clock the demo moves, and httpx talking to
the app in-process. A ``DELETE`` waits for a human's approval
(:mod:`agentguard.cli._demo_approval`). It ends by anchoring the audit log with a signed
checkpoint and showing that an edit made directly in the database is caught.
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
from pathlib import Path
from typing import TextIO

import anyio
import httpx

from agentguard._guard import Guard
from agentguard._model import IssuedKeys, Level
from agentguard._permissions import RouteRule
from agentguard.asgi import AgentGuardMiddleware, OAuthApp, principal_from_scope
from agentguard.audit import (
    Checkpointer,
    Ed25519Signer,
    MemoryCheckpointSink,
    verify_chain,
    verify_log,
)
from agentguard.storage import SQLiteStore
from agentguard.testing import FakeClock, make_user

__all__ = ["run"]


def _short(key: str) -> str:
    return key[:10] + "…"


class _Teller:
    def __init__(self, out: TextIO, color: bool) -> None:
        self.out = out
        self.color = color
        self.step = 0

    def _paint(self, code: str, text: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.color else text

    def title(self, text: str) -> None:
        self.step += 1
        print(f"\n{self._paint('1', f'{self.step}. {text}')}", file=self.out)

    def say(self, text: str) -> None:
        print(f"   {text}", file=self.out)

    def result(self, response: httpx.Response) -> None:
        ok = response.status_code < 400
        mark = self._paint("32", "ALLOWED") if ok else self._paint("31", "DENIED ")
        body = response.json() if response.content else {}
        detail = body.get("reason") or body.get("error") or ""
        extra = f"  {detail}" if detail else ""
        print(f"   -> {mark} {response.status_code}{extra}", file=self.out)


async def _story(tell: _Teller, directory: Path) -> int:  # noqa: PLR0915 - one linear story
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Mount, Route

    from agentguard.cli._demo_approval import Deletions, tell_approval
    from agentguard.cli._demo_connect import mail_service, mail_vendor, set_up_mail, tell_connect
    from agentguard.cli._demo_swap import CRM_KEY, PROJECTS_ADMIN_KEY, set_up_vendors

    clock = FakeClock()
    database = directory / "agentguard.db"
    store = SQLiteStore(database, clock=clock)
    rules = [RouteRule("/crm", service="crm", approval={"DELETE"})]  # a delete waits for a human
    vendor = mail_vendor(clock)  # a vendor where each user connects their own account
    guard = Guard(store, rules=rules, clock=clock, services=[mail_service(vendor)])
    await store.initialize()
    user = await make_user(
        store,
        user_id="alice",
        account_id="acme",
        workspace_id="sales",
        grants="crm:read projects:read mail:read",
    )
    vendors = await set_up_vendors(guard, store, clock, user)
    mail = set_up_mail(guard, store, vendor)

    async def contacts(request: Request) -> JSONResponse:
        who = principal_from_scope(request.scope)
        if request.method == "POST":
            return JSONResponse({"created": True, "by": who.user_id}, status_code=201)
        return JSONResponse({"contacts": ["Ada", "Grace"], "for": who.user_id})

    deletions = Deletions()
    app = AgentGuardMiddleware(
        Starlette(
            routes=[
                Route("/crm/contacts", contacts, methods=["GET", "POST"]),
                Route("/crm/contacts/{contact}", deletions.delete, methods=["DELETE"]),
                Mount("/oauth", app=OAuthApp(guard)),
                Mount("/vendors/crm", app=vendors.proxies["crm"]),
                Mount("/vendors/projects", app=vendors.proxies["projects"]),
                Mount("/vendors/mail", app=mail.proxy),
                Mount("/connect", app=mail.connect),  # for humans: one-time links, no agent key
            ]
        ),
        guard,
        public_paths=["/oauth", "/vendors", "/connect"],  # these check keys or links themselves
    )
    transport = httpx.ASGITransport(app=app)
    async with store, httpx.AsyncClient(transport=transport, base_url="http://demo.test") as http:

        def bearer(keys: IssuedKeys) -> dict[str, str]:
            return {"Authorization": f"Bearer {keys.access_key.reveal()}"}

        async def refresh(refresh_key: str) -> httpx.Response:
            form = {"grant_type": "refresh_token", "refresh_token": refresh_key}
            return await http.post("/oauth/token", data=form)

        tell.title("Alice (account Acme, workspace Sales) may read the CRM, projects and mail")
        tell.say(f"store: SQLite at {database.name} (the embedded default)")
        keys = await guard.issuer.issue(user.id, "sales")
        issued = [keys.access_key.reveal(), keys.refresh_key.reveal()]
        tell.say(f"access key  {_short(keys.access_key.reveal())}  (expires in 1 h)")
        tell.say(f"refresh key {_short(keys.refresh_key.reveal())}  (can only mint access keys)")
        tell.say("the server stores only their SHA-256 hashes")

        tell.title("The agent reads contacts with its placeholder access key")
        tell.say("GET /crm/contacts")
        tell.result(await http.get("/crm/contacts", headers=bearer(keys)))

        tell.title("The agent calls the vendor's CRM API as documented: key in X-Api-Key")
        tell.say("GET /vendors/crm/contacts   X-Api-Key: <placeholder access key>")
        placeholder = {"X-Api-Key": keys.access_key.reveal()}
        tell.result(await http.get("/vendors/crm/contacts", headers=placeholder))
        seen = vendors.crm.requests[-1]
        tell.say(f"the CRM received  {seen.method} {seen.path}  X-Api-Key: {_short(CRM_KEY)}")
        real = "yes" if seen.header("x-api-key") == CRM_KEY else "NO"
        upstream_saw = "NO" if keys.access_key.reveal() not in seen.raw else "YES"
        tell.say(f"real key arrived: {real}; placeholder present upstream: {upstream_saw}")

        tell.title("The projects board only issued an admin key: it never leaves the server")
        for board in ("boards", "boards/7"):
            tell.result(await http.get(f"/vendors/projects/{board}", headers=bearer(keys)))
        sent = [request.header("authorization") for request in vendors.projects.requests]
        tell.say(f"projects received: {sent[0]} (a token minted for alice alone), twice")
        admin_sent = any(PROJECTS_ADMIN_KEY in request.raw for request in vendors.projects.requests)
        tell.say(
            f"token exchanges: {len(vendors.exchange.calls)} (cached until 80% of its life); "
            f"admin key sent upstream: {'YES' if admin_sent else 'no'}"
        )
        issued += [CRM_KEY, PROJECTS_ADMIN_KEY]

        tell.title("The agent tries to write: Alice has crm:read, not crm:write")
        tell.say("POST /crm/contacts")
        tell.result(await http.post("/crm/contacts", headers=bearer(keys)))

        tell.title("Alice is promoted to crm:write; the same key may write on the next call")
        await store.put_user(
            user.model_copy(update={"grants": user.grants.with_level("crm", Level.WRITE)})
        )
        tell.result(await http.post("/crm/contacts", headers=bearer(keys)))
        operator_token = await tell_approval(
            tell, http, guard=guard, store=store, headers=bearer(keys), deletions=deletions
        )
        issued.append(operator_token)
        issued += await tell_connect(tell, http, mail, bearer(keys))

        tell.title("50 minutes later the runtime refreshes ahead of expiry (rotation)")
        clock.advance(50 * 60)
        response = await refresh(keys.refresh_key.reveal())
        tell.result(response)
        fresh = response.json()
        issued += [fresh["access_token"], fresh["refresh_token"]]
        tell.say(f"new access key {_short(fresh['access_token'])}, old refresh key is now spent")
        new_headers = {"Authorization": f"Bearer {fresh['access_token']}"}
        tell.result(await http.get("/crm/contacts", headers=new_headers))

        tell.title("Someone replays the spent refresh key (a stolen copy?)")
        tell.result(await refresh(keys.refresh_key.reveal()))
        tell.say("reuse detected: the whole key family is revoked, the new access key too")
        tell.result(await http.get("/crm/contacts", headers=new_headers))

        tell.title("A fresh pair for Alice, then an admin disables her")
        keys = await guard.issuer.issue(user.id, "sales")
        issued += [keys.access_key.reveal(), keys.refresh_key.reveal()]
        tell.result(await http.get("/crm/contacts", headers=bearer(keys)))
        current = await store.get_user("alice") or user
        await store.put_user(current.model_copy(update={"enabled": False}))
        tell.say("user disabled: nothing to propagate, the very next call fails")
        tell.result(await http.get("/crm/contacts", headers=bearer(keys)))
        tell.say("and the refresh key cannot mint a way back in")
        tell.result(await refresh(keys.refresh_key.reveal()))

        tell.title("Every decision, allowed or denied, is in the hash-chained audit log")
        entries = await store.read()
        for entry in entries:
            event = entry.event()
            line = " ".join(
                str(part)
                for part in (
                    f"#{entry.seq:<3}",
                    f"{event['action']:<19}",
                    f"{event['decision'] or '':<6}",
                    event["method"] or "",
                    event["path"] or "",
                    event["reason"] or "",
                )
                if part
            )
            tell.say(line)
        broken = verify_chain(entries)
        verdict = "intact" if broken is None else f"BROKEN at {broken.seq}: {broken.problem}"
        log = b"".join(entry.body for entry in entries).decode()
        leaked = [secret for secret in issued if secret in log]
        secrecy = "no key appears in it" if not leaked else f"{len(leaked)} KEYS LEAKED"
        tell.say(f"{len(entries)} events, chain {verdict}; {secrecy}")
        await vendors.aclose()
        await mail.aclose()
        if broken is not None or leaked:
            return 1
        return await _anchor_and_tamper(tell, store, database)


async def _anchor_and_tamper(tell: _Teller, store: SQLiteStore, database: Path) -> int:
    tell.title("The log is anchored: a checkpoint signed with a key outside the database")
    signer = Ed25519Signer.generate("audit.demo.test")
    sink = MemoryCheckpointSink()
    note = await Checkpointer(store, signer, "audit.demo.test/agentguard", sink).checkpoint()
    for line in note.rstrip().splitlines():
        tell.say(f"| {line}")
    report = verify_log(await store.read(), await sink.notes(), [signer.vkey()])
    tell.say(f"verify: {'OK' if report.ok else 'FAIL'}, anchored at size {report.anchored_size}")

    denied = next(
        entry.seq for entry in await store.read() if entry.event()["reason"] == "insufficient_scope"
    )
    tell.title(f"Someone with database access rewrites event #{denied} to hide the denied write")
    connection = sqlite3.connect(database)
    connection.execute("DROP TRIGGER audit_no_update")  # the append-only guard goes first
    connection.execute(
        "UPDATE audit SET body = CAST(replace(body, '\"deny\"', '\"allow\"') AS BLOB) "
        "WHERE seq = ?",
        (denied,),
    )
    connection.commit()
    connection.close()
    report = verify_log(await store.read(), await sink.notes(), [signer.vkey()])
    for finding in report.findings[:2]:
        tell.say(finding.line())
    tell.say("the edit is caught: the stored bytes no longer hash to the chained value")
    return 0 if not report.ok else 1


def run(*, color: bool = False, out: TextIO | None = None) -> int:
    """Run the demo, printing to ``out`` (stdout by default); returns the exit code."""
    with tempfile.TemporaryDirectory(prefix="agentguard-demo-") as directory:
        return anyio.run(_story, _Teller(out or sys.stdout, color), Path(directory))
