"""The settings of observability: ``[telemetry]``, and the audit log's tiles and witnesses.

Exported from :mod:`agentguard.config`; kept apart because that module is long::

    [audit]
    tiles = "operators"     # the log as C2SP tlog-tiles on the operator listener, under /log/:
                            # "off", "operators" (an operator token), "hashes" (checkpoint and
                            # hash tiles public, entries need a token) or "public"
    witness_quorum = 1      # cosignatures a checkpoint needs to count as witnessed (/readyz)

    [[audit.witnesses]]     # C2SP tlog-witness servers each new checkpoint is submitted to
    url = "https://witness.example/"
    vkey = "witness.example/w1+4f1c2a3b+BASE64..."   # its cosignature/v1 verifier key

    [telemetry]             # needs the optional extra: pip install 'agentguard[otel]'
    traces = true           # one OpenTelemetry span per decision, W3C traceparent propagated
    metrics = true          # decision and latency metrics; Prometheus text at /metrics on the
                            # operator listener
    service_name = "agentguard"
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["TILE_ACCESS", "TelemetrySettings", "TileAccess", "WitnessSettings"]

TileAccess = Literal["off", "operators", "hashes", "public"]
TILE_ACCESS: tuple[TileAccess, ...] = ("off", "operators", "hashes", "public")


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class WitnessSettings(_Section):
    """``[[audit.witnesses]]``: one C2SP tlog-witness the checkpointer submits to.

    ``url`` is the witness's submission prefix (``add-checkpoint`` is appended); ``vkey`` its
    ``cosignature/v1`` verifier key (``name+keyid+base64``), configured here, never fetched.
    """

    url: str
    vkey: str
    timeout: float = Field(default=10.0, gt=0)


class TelemetrySettings(_Section):
    """``[telemetry]``: OpenTelemetry traces and metrics per decision (off unless enabled)."""

    traces: bool = False
    metrics: bool = False
    service_name: str = "agentguard"
