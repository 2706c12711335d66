"""The Node client's live tests, run by node's test runner against real processes."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

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
