"""The three copies of the "retry dropped calls" service config say the same.

The gateway (``gateway/app.py``), the Python client and the Node client each give their
channels gRPC's own retry of a call a stopping service answered CANCELLED (README,
"Rotating keys and certificates"). They are kept as three copies rather than one file:
each ships in its own package (``amperity-signal``, ``amperity-signal-client``, the Node
package's ``files``), none of which may reach into another's, and the Python client
depends on the service's package, not the reverse. This test keeps the copies equal.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from amperity_signal.gateway import app
from amperity_signal_client import client
from tests.e2e.stack import require_binary

NODE_CLIENT = Path(__file__).resolve().parents[2] / "clients" / "node"
_NODE_PRINTS = "process.stdout.write(require('.').RETRY_DROPPED_CALLS);"


def _node_config() -> Any:
    """The Node client's RETRY_DROPPED_CALLS, parsed."""
    completed = subprocess.run(
        [require_binary("node"), "-e", _NODE_PRINTS],
        cwd=NODE_CLIENT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


def test_the_gateway_and_both_clients_retry_the_same_dropped_calls() -> None:
    """Parsed, the gateway's, the Python client's and the Node client's configs are equal."""
    gateway = json.loads(app._RETRY_DROPPED_CALLS)
    python = json.loads(client.RETRY_DROPPED_CALLS)
    node = _node_config()
    assert python == gateway
    assert node == gateway
    # What all three mean: the AmperityService's calls, resent on CANCELLED alone.
    (method,) = gateway["methodConfig"]
    assert method["name"] == [{"service": "datafly.amperity.v1.AmperityService"}]
    assert method["retryPolicy"]["retryableStatusCodes"] == ["CANCELLED"]
