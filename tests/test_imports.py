"""The core never imports a web framework; ``import agentguard`` stays light."""

from __future__ import annotations

import subprocess
import sys

CORE = [
    "agentguard",
    "agentguard.guard",
    "agentguard.keys",
    "agentguard.resolver",
    "agentguard.permissions",
    "agentguard.storage",
    "agentguard.audit",
    "agentguard.model",
    "agentguard.errors",
    "agentguard.review",
]
FRAMEWORKS = ["starlette", "fastapi", "flask", "werkzeug", "httpx", "uvicorn"]


def test_core_imports_no_web_framework() -> None:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in CORE)
        + f"print(','.join(m for m in {FRAMEWORKS!r} if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""


def test_asgi_layer_needs_no_starlette() -> None:
    code = "import sys, agentguard.asgi\nprint('starlette' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
