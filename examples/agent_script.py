"""An agent's side of the gateway: load the credentials file, call three vendors through it.

    agentguard keys issue --store sqlite:///examples/gateway/gateway.db --user alice \\
        --workspace sales --out ~/.agentguard/credentials.json \\
        --token-url http://127.0.0.1:8080/oauth/token --resource-url http://127.0.0.1:8080
    python examples/agent_script.py --credentials ~/.agentguard/credentials.json

The agent never holds a vendor key: it holds an agentguard access key (DPoP-bound by default)
and a refresh key. ``AgentAuth`` signs every request, renews the access key before it expires
and writes the rotated keys back to the file. The CRM expects its key in ``X-Api-Key``, like
its real SDK would send it, so that client puts the placeholder there.

When the gateway refuses the agent for good (``agentguard users disable alice``, or its keys
revoked), ``AgentAuth`` raises ``RefreshFailed`` with ``permanent`` set; the script prints
that one line and exits with status 1, e.g.::

    agent stopped: refresh refused: invalid_grant (user_disabled: the user is disabled); issue
    new keys with `agentguard keys issue`

A missing or unsafe credentials file, or a gateway that does not answer, also ends it with one
line and status 1 (2 for a usage error).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import httpx

from agentguard.client import AgentAuth, AgentAuthError


def _x_api_key(request: httpx.Request, key: str) -> None:
    request.headers["X-Api-Key"] = key


def main(argv: Sequence[str] | None = None) -> int:
    """Call each service once, renew the keys, call again; print what came back."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--credentials", type=Path, required=True)
    parser.add_argument("--gateway", default="http://127.0.0.1:8080")
    args = parser.parse_args(argv)
    try:
        return run(args.credentials, args.gateway)
    except AgentAuthError as error:  # RefreshFailed, CredentialsFileError, DPoPNonceLoop
        print(f"agent stopped: {error}", file=sys.stderr)
    except httpx.TransportError as error:
        print(
            f"agent stopped: {args.gateway} did not answer ({type(error).__name__})",
            file=sys.stderr,
        )
    return 1


def run(credentials: Path, gateway: str) -> int:
    """The agent's work; raises when the runtime cannot get a working key."""
    auth = AgentAuth.from_file(credentials)
    crm_auth = AgentAuth.from_file(credentials, placement=_x_api_key)
    with (
        httpx.Client(base_url=gateway, auth=auth) as client,
        httpx.Client(base_url=gateway, auth=crm_auth) as crm,
    ):
        calls = [
            ("crm", crm.get("/crm/contacts")),
            ("automations", client.post("/automations/runs", json={"flow": "weekly-report"})),
            ("projects", client.get("/projects/boards")),
        ]
        for name, response in calls:
            print(f"{name}: {response.status_code} {response.text}")
        auth.renew(fraction=0)  # what the runtime does on its own near expiry
        again = client.get("/projects/boards")
        print(f"after renewal: {again.status_code}")
    ok = all(response.status_code == 200 for _, response in calls) and again.status_code == 200
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
