"""OpenTelemetry per decision: one span and the metrics of every guard decision (optional).

Install the extra (``pip install 'agentguard[otel]'``) and pass ``Guard(telemetry=Telemetry())``;
the gateway builds one from ``[telemetry]``. Importing this package imports no OpenTelemetry
module; a guard without telemetry never does. See ``docs/how-to/telemetry.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agentguard.telemetry._telemetry import Telemetry

if TYPE_CHECKING:
    from agentguard.telemetry._prometheus import PrometheusReader

__all__ = ["PrometheusReader", "Telemetry"]


def __getattr__(name: str) -> Any:
    if name == "PrometheusReader":  # imports the OpenTelemetry SDK: only when asked for
        from agentguard.telemetry._prometheus import PrometheusReader

        return PrometheusReader
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
