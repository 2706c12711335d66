"""What the configuration and command-line tests share: a valid integration, the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

INGEST = "eyJhbGciOiJIUzI1NiJ9.eyJzY29wZSI6ImluZ2VzdCJ9.aW5nZXN0LWNhbmFyeS0xMjM0NQ"


def integration(**overrides: Any) -> dict[str, Any]:
    """One valid ``[[integrations]]`` table (ingest only), with ``overrides`` applied."""
    base: dict[str, Any] = {
        "id": "web",
        "pipeline_key": "pk_web",
        "vertical": "retail",
        "tenant_subdomain": "acme",
        "tenant_id": "acme",
        "api_key": INGEST,
        "event_stream_id": "esm-2VP6va3Zn",
        "source_value": "DATAFLY",
    }
    base.update(overrides)
    return base


def run_cli(
    *args: str, timeout: float = 60, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m amperity_signal.cli ARGS`` in a subprocess, output captured.

    ``env`` adds to (or, with "", blanks) this process's environment variables.
    """
    return subprocess.run(
        [sys.executable, "-m", "amperity_signal.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **env} if env is not None else None,
    )
