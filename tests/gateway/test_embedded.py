"""The gateway embedded in the service's loop, as ``amperity-signal serve`` runs it."""

from __future__ import annotations

from pathlib import Path

import httpx

from amperity_signal.config import load_settings
from amperity_signal.gateway.embedded import EmbeddedGateway
from amperity_signal.metrics import Metrics

from .fakes import RunningService

REPO = Path(__file__).resolve().parents[2]


async def test_embedded_gateway_serves_on_port_zero_and_records_latency(
    service: RunningService,
) -> None:
    """start() resolves port 0 to a real address; requests land in the latency histogram."""
    config = load_settings(REPO / "examples" / "amperity-signal.toml")
    server = config.server.model_copy(update={"http_address": "127.0.0.1:0"})
    settings = config.model_copy(update={"server": server})
    metrics = Metrics()
    gateway = EmbeddedGateway(settings, grpc_target=service.target, metrics=metrics)
    address = await gateway.start()
    try:
        assert not address.endswith(":0")
        async with httpx.AsyncClient(base_url=f"http://{address}") as client:
            assert (await client.get("/readyz")).status_code == 200
    finally:
        await gateway.stop()
    count = metrics.registry.get_sample_value(
        "amperity_signal_gateway_seconds_count", {"route": "/readyz", "status": "200"}
    )
    assert count == 1.0
