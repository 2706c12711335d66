"""The Node client's live tests, run by node's test runner against real processes."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from amperity_signal_client import event_from_json
from amperity_signal_client.events import EventFieldError
from tests.e2e.stack import Stack, require_binary

pytestmark = pytest.mark.e2e
NODE_CLIENT = Path(__file__).resolve().parents[2] / "clients" / "node"


async def test_node_client_calls_deliver_enrich_and_browser_profile(stack: Stack) -> None:
    """Node's test runner passes the client's live tests against sandbox + service.

    The integration shows the browser profile only under functional consent, so the live
    RecordConsent test sees a withdrawal hide it and a grant with an older consentedAt
    leave it hidden.
    """
    node = require_binary("node")
    if not (NODE_CLIENT / "node_modules").is_dir():
        pytest.fail("clients/node/node_modules is missing: run `make setup` (npm ci)")
    sandbox = await stack.sandbox()
    service = await stack.service(sandbox, args=("--no-gateway",), browser_consent="functional")
    env = {
        **os.environ,
        "CI": "true",  # the live part must run here, never skip
        "AMPERITY_SIGNAL_GRPC_TARGET": service.grpc_target,
        "AMPERITY_SIGNAL_INTEGRATION_ID": "web",
        "AMPERITY_SIGNAL_PIPELINE_KEY": "pk_web",
        "AMPERITY_SIGNAL_BROWSER_CONSENT": "functional",
    }
    process = await asyncio.create_subprocess_exec(
        node,
        "--test",
        cwd=NODE_CLIENT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 120)
    text = output.decode(errors="replace")
    assert process.returncode == 0, text
    assert "# fail 0" in text
    assert "# skipped 0" in text or "# skip 0" in text, text


# The cases both client suites read, and more: what the two clients once read apart.
_SHARED_CASES = json.loads((NODE_CLIENT.parent / "testdata" / "timestamps.json").read_text("utf-8"))
TIMESTAMPS = (
    *(case["input"] for case in _SHARED_CASES["cases"]),
    "2025-01-31 12:00",
    "2025-01-31T12:00:00,5",
    "2024-02-29T23:59:59.999999",
)
# The Node client's reading of each, printed as JSON: {seconds, nanos} or {error}.
_NODE_READS = """
const { toProtoEvent } = require('.');
process.stdout.write(JSON.stringify(JSON.parse(process.argv[1]).map((timestamp) => {
  try {
    return toProtoEvent({ timestamp }).timestamp;
  } catch (error) {
    return { error: error.message };
  }
})));
"""


def _python_reads(timestamp: str) -> dict[str, object]:
    """The Python client's reading, in the Node script's shape."""
    try:
        moment = event_from_json({"timestamp": timestamp}).timestamp
    except EventFieldError as error:
        return {"error": str(error)}
    return {"seconds": str(moment.seconds), "nanos": moment.nanos}


async def test_the_node_client_reads_a_timestamp_as_the_python_client_does() -> None:
    """West of UTC too: the same instant from both clients, or the same refusal.

    Node runs under TZ=America/New_York, where Date.parse read an offset-less timestamp
    5 hours late and rolled Feb 30 over to Mar 2. That the gateway reads each as the
    Python client does, to the same words, is pinned by tests/unit/test_timestamp_parity.py.
    """
    node = require_binary("node")
    process = await asyncio.create_subprocess_exec(
        node,
        "-e",
        _NODE_READS,
        json.dumps(TIMESTAMPS),
        cwd=NODE_CLIENT,
        env={**os.environ, "TZ": "America/New_York"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    output, errors = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, errors.decode(errors="replace")
    node_reads = dict(zip(TIMESTAMPS, json.loads(output), strict=True))

    for timestamp in TIMESTAMPS:
        python = _python_reads(timestamp)
        assert node_reads[timestamp] == python, timestamp
