"""Three fake vendor APIs and a token-exchange endpoint on loopback, for the gateway example.

    python examples/gateway/fake_vendors.py

CRM on :9101 (accepts ``crm-user-key-alice`` in ``X-Api-Key``), automations on :9102 (accepts
``automations-user-key-alice`` as Bearer), projects on :9103 (accepts the tokens minted by the
token endpoint on :9104 for the admin key ``projects-admin-key``). Each answers JSON describing
the request it received.
"""

from __future__ import annotations

import threading

from agentguard.testing import FakeTokenExchange, FakeUpstream

CRM_KEY = "crm-user-key-alice"
AUTOMATIONS_KEY = "automations-user-key-alice"
PROJECTS_ADMIN_KEY = "projects-admin-key"


def vendors() -> dict[str, FakeUpstream | FakeTokenExchange]:
    """The fakes by name: ``crm``, ``automations``, ``projects`` and ``token`` (the exchange)."""
    return {
        "crm": FakeUpstream("crm", accepted={CRM_KEY}, header="x-api-key"),
        "automations": FakeUpstream("automations", accepted={AUTOMATIONS_KEY}),
        "projects": FakeUpstream("projects"),
        "token": FakeTokenExchange(admin_key=PROJECTS_ADMIN_KEY),
    }


PORTS = {"crm": 9101, "automations": 9102, "projects": 9103, "token": 9104}


def main() -> None:
    """Serve every fake on its port until interrupted."""
    import uvicorn

    servers = [
        uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=PORTS[name], lifespan="off"))
        for name, app in vendors().items()
    ]
    threads = [threading.Thread(target=server.run, daemon=True) for server in servers[1:]]
    for thread in threads:
        thread.start()
    servers[0].run()
    for server in servers[1:]:
        server.should_exit = True


if __name__ == "__main__":
    main()
