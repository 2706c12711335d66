"""What a failed collector request logs: one warning per failure, the one naming the fix."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.contract.harness import SANDBOX_URL
from tests.support import OutageStore
from tests.unit.enrich.enrich_fakes import FakeClock

from .realservice import Stack, real_stack


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    """The real service behind the gateway, its sandbox for Amperity."""
    async with real_stack(OutageStore(), FakeClock()) as running:
        yield running


async def test_a_delivery_amperity_refuses_is_one_warning_naming_the_integration_and_fix(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    """Beside the service's "delivery failed", the gateway warned "RPC failed: UNAUTHENTICATED"."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=stack.sandbox), base_url=SANDBOX_URL
    ) as inspector:
        fault = {"status": 401, "kind": "events", "count": 1}
        (await inspector.post("/_sandbox/faults", json=fault)).raise_for_status()
    with caplog.at_level(logging.DEBUG, logger="amperity_signal"):
        response = await stack.client.post(
            "/v1/t",
            json={"event": "Order Completed", "anonymousId": "anon-refused"},
            headers={"X-Pipeline-Key": "pk_web"},
        )
    assert response.status_code == 502, response.text
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    [warning] = warnings
    assert warning.getMessage().startswith("delivery failed: Amperity answered 401 on event POST")
    assert "Regenerate it" in warning.getMessage()
    [gateway] = [r for r in caplog.records if r.name == "amperity_signal.gateway.app"]
    assert gateway.levelno == logging.DEBUG
    assert gateway.getMessage() == (
        "POST /v1/t answered 502 UPSTREAM_ERROR: the service refused it with "
        "INGEST_KEY_REJECTED for integration web"
    )
