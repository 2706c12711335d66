"""What a failed collector request logs: one warning per failure, the one naming the fix."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx
import pytest

from amperity_signal.gateway.embedded import EmbeddedGateway
from amperity_signal.redaction import REDACTED
from amperity_signal.sandbox import SandboxApp
from tests.contract.harness import SANDBOX_URL
from tests.support import OutageStore
from tests.unit.enrich.enrich_fakes import FakeClock

from .conftest import GatewayFactory
from .fakes import KNOWN_KEY, LEAKED_SECRET, REFUSED_REQUEST_ID
from .realservice import Stack, real_service, real_stack


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
        "POST /v1/t answered 502 UPSTREAM_REFUSED: the service refused it with "
        "INGEST_KEY_REJECTED for integration web"
    )


async def refuse_events(sandbox: SandboxApp, count: int) -> None:
    """The sandbox answers the next ``count`` event POSTs 401."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sandbox), base_url=SANDBOX_URL
    ) as inspector:
        fault = {"status": 401, "kind": "events", "count": count}
        (await inspector.post("/_sandbox/faults", json=fault)).raise_for_status()


async def test_a_standalone_gateway_warns_of_each_refused_event_with_its_reason_and_advice(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Its own log has one warning per event Amperity refused, single or in a batch.

    A gateway run as its own process logged nothing of a refused event (a debug line for
    /v1/t, nothing at all for /v1/batch): the service's warning was in another log.
    """
    async with real_stack(OutageStore(), FakeClock(), embedded=False) as stack:
        await refuse_events(stack.sandbox, 3)
        with caplog.at_level(logging.DEBUG, logger="amperity_signal"):
            single = await stack.client.post(
                "/v1/t",
                json={"event": "Order Completed", "anonymousId": "anon-1", "messageId": "m-1"},
                headers={"X-Pipeline-Key": "pk_web"},
            )
            events = [
                {"event": "x", "anonymousId": "anon-2", "messageId": f"b-{n}"} for n in (1, 2)
            ]
            batch = await stack.client.post(
                "/v1/batch", json={"batch": events}, headers={"X-Pipeline-Key": "pk_web"}
            )

    assert single.status_code == 502, single.text
    assert [r["ok"] for r in batch.json()["results"]] == [False, False]
    gateway = [
        r
        for r in caplog.records
        if r.name.startswith("amperity_signal.gateway") and r.levelno >= logging.WARNING
    ]
    assert sorted(getattr(r, "message_id", "") for r in gateway) == ["b-1", "b-2", "m-1"]
    for record in gateway:
        assert record.getMessage().startswith(
            "delivery failed: Amperity answered 401 on event POST: the Streaming Ingest JWT"
        )
        assert "Regenerate it under Settings > Security > API Keys" in record.getMessage()
        assert (getattr(record, "reason", ""), getattr(record, "integration_id", "")) == (
            "INGEST_KEY_REJECTED",
            "web",
        )
        assert getattr(record, "request_id", "")  # the service's, for its own line
    service = [r for r in caplog.records if r.name == "amperity_signal.delivery"]
    assert len(service) == 3


async def test_the_gateway_serve_embeds_leaves_a_refused_event_to_the_services_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """In the service's process (``EmbeddedGateway``), one warning per refused event: its own."""
    async with real_service(OutageStore(), FakeClock()) as (service, sandbox, settings):
        gateway = EmbeddedGateway(settings, channel_factory=service.in_process_channel)
        address = await gateway.start()
        try:
            await refuse_events(sandbox, 1)
            caplog.clear()  # the service's start-up lines
            with caplog.at_level(logging.DEBUG, logger="amperity_signal"):
                async with httpx.AsyncClient(base_url=f"http://{address}") as client:
                    answer = await client.post(
                        "/v1/t",
                        json={"event": "Order Completed", "anonymousId": "anon-embedded"},
                        headers={"X-Pipeline-Key": "pk_web"},
                    )
        finally:
            await gateway.stop()

    assert answer.status_code == 502, answer.text
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.name for r in warnings] == ["amperity_signal.delivery"]


async def test_a_refusal_the_service_quotes_a_secret_in_is_logged_scrubbed(
    make_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A service's advice quoting a configured secret is logged with the secret redacted."""
    gateway = make_gateway(redact=(LEAKED_SECRET,))
    with caplog.at_level(logging.WARNING, logger="amperity_signal"):
        answer = await gateway.post(
            "/v1/t",
            json={"event": "refused:UNAUTHENTICATED", "anonymousId": "anon-x", "messageId": "m-9"},
            headers={"X-Pipeline-Key": KNOWN_KEY},
        )

    assert answer.status_code == 502
    [warning] = caplog.records
    assert warning.getMessage() == (
        f"delivery failed: Amperity answered 401 on event POST (key {REDACTED}): regenerate it."
    )
    assert getattr(warning, "request_id", "") == REFUSED_REQUEST_ID
    assert LEAKED_SECRET not in caplog.text
