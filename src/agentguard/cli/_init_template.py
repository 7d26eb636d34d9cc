"""The settings file ``agentguard init`` writes: every section present and explained."""

from __future__ import annotations

import json

__all__ = ["TEMPLATE", "render", "service_block", "toml_string"]

TEMPLATE = """\
# agentguard settings. Every value below may be overridden by an AGENTGUARD_* environment
# variable (AGENTGUARD_STORE, AGENTGUARD_PUBLIC_ORIGIN, AGENTGUARD_SERVER_PORT, ...).
# Secrets are never written here: they come from environment variables or 0600 files.
# Reference: docs/configuration.md

# The URL agents use to reach this gateway: DPoP proofs and metadata name it.
public_origin = {origin}

[store]
# sqlite:///relative/to/this/file.db, sqlite:////absolute.db, postgresql://user@host/db?schema=x
url = {store}

[keys]
access_ttl = 3600          # seconds an access key lives
refresh_ttl = 2592000      # seconds a refresh key lives (30 days)

[dpop]
enabled = true             # accept DPoP-bound keys (agentguard keys issue binds by default)
required = false           # true: refuse unbound keys and issue only bound ones

[server]
host = "127.0.0.1"
port = 8080
graceful_timeout = 30      # seconds in-flight requests may take to finish on SIGTERM

[operator]                 # approvals for operators: agentguard operators issue --name you
host = "127.0.0.1"         # keep it on loopback (or a private network); agent keys are refused
port = 8081

[logging]
level = "info"
format = "json"            # "json": one object per line with request ids; "text"
access_log = true

[audit]
# instance = "gateway-1"   # this process's name in audit events
# Signed checkpoints (make truncation detectable). The key: agentguard audit keygen.
# origin = "audit.example.com/agentguard/prod"
# checkpoint_key_file = "/etc/agentguard/audit.pem"     # mode 0600 (or AGENTGUARD_CHECKPOINT_KEY)
# checkpoint_dir = "/var/lib/agentguard/checkpoints"    # ideally an append-only mount
# checkpoint_interval = 60
# tiles = "operators"       # the log as C2SP tlog-tiles at /log/ on the operator listener:
#                           # "off", "operators" (an operator token), "hashes", "public"
# witness_quorum = 1        # cosignatures that make a checkpoint witnessed (/readyz)
# [[audit.witnesses]]       # C2SP tlog-witnesses that cosign each new checkpoint
# url = "https://witness.example/"
# vkey = "witness.example/w1+4f1c2a3b+BASE64..."   # its cosignature/v1 key, from the witness

# [telemetry]               # pip install 'agentguard[otel]'
# traces = true             # one OpenTelemetry span per decision (OTEL_* exporter settings)
# metrics = true            # Prometheus text at /metrics on the operator listener

[secrets]
# Files holding secrets, mode 0600; the environment variables win over them.
{kek_line}
# introspection_secrets_file = "/etc/agentguard/introspection"

# One [[services]] table per vendor API the gateway fronts at /<name>; `agentguard init
# --service NAME=URL` writes them. Without one the gateway proxies nothing (serve says so).
{services}
# [[services]]
# name = "crm"
# base_url = "https://api.crm.example/v2"
# placement = "header"       # "bearer" (Authorization), "header" or "query"
# parameter = "X-Api-Key"
#
# [[services]]
# name = "projects"
# base_url = "https://api.projects.example"
#
# A service whose vendor only issues admin keys: mint a user-scoped token (RFC 8693).
# [minters.projects]
# token_url = "https://api.projects.example/oauth/token"
#
# A service that acts with each user's own vendor account, connected over OAuth in the
# browser: `agentguard connections link --service mail --user alice` prints a one-time link
# for alice's human. Register <public_origin>/connect/mail/callback as the redirect URI at the
# vendor. The client secret never goes here: AGENTGUARD_OAUTH_MAIL_CLIENT_SECRET, or a 0600
# file named under [secrets]: oauth_client_secret_files = {{ mail = "/etc/agentguard/mail" }}
# [[services]]
# name = "mail"
# base_url = "https://api.mail.example/v1"
# credentials = "connected"  # never the vault: a user who has not connected is refused
#
# [services.oauth]
# client_id = "agentguard-mail"
# authorization_endpoint = "https://auth.mail.example/authorize"
# token_endpoint = "https://auth.mail.example/token"
# revocation_endpoint = "https://auth.mail.example/revoke"   # optional (RFC 7009)
# scopes = ["mail.read"]
#
# [connect]
# ticket_ttl = 900           # seconds a connect link stays usable
# state_ttl = 600            # seconds the human may take at the vendor's consent page
"""


def toml_string(value: str) -> str:
    """``value`` as a TOML basic string."""
    return json.dumps(value)


def service_block(name: str, base_url: str) -> str:
    """An active ``[[services]]`` table: the vendor's key goes in ``Authorization: Bearer``."""
    return (
        "[[services]]\n"
        f"name = {toml_string(name)}\n"
        f"base_url = {toml_string(base_url)}\n"
        'placement = "bearer"       # or "header" / "query" with parameter = "X-Api-Key"\n'
    )


def render(*, origin: str, store: str, kek_file: str | None, services: list[str]) -> str:
    """The settings text; ``kek_file`` as written in the file (relative to it, or absolute)."""
    kek_line = (
        f"kek_file = {toml_string(kek_file)}   # mode 0600; back it up with the store"
        if kek_file is not None
        else '# kek_file = "/etc/agentguard/kek"  # or AGENTGUARD_KEK="kek-1:BASE64URL_32_BYTES"'
    )
    return TEMPLATE.format(
        origin=toml_string(origin),
        store=toml_string(store),
        kek_line=kek_line,
        services="\n".join(services),
    )
