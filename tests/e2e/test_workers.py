"""``serve --workers 2``: two processes share the ports and /metrics counts for both."""

from __future__ import annotations

import asyncio
import re
import signal

import grpc
import httpx
import pytest

from datafly.amperity.v1 import amperity_service_pb2 as pb
from datafly.amperity.v1 import amperity_service_pb2_grpc as pb_grpc
from tests.e2e.stack import Stack, free_port
from tests.support import message_id

pytestmark = pytest.mark.e2e
DELIVERIES = re.compile(
    r'^amperity_signal_deliveries_total\{[^}]*outcome="delivered"[^}]*\} (\S+)$'
)


async def test_two_workers_share_the_ports_and_aggregate_metrics(stack: Stack) -> None:
    """Connections spread over both workers; /metrics sums deliveries across them."""
    sandbox = await stack.sandbox()
    grpc_address = f"127.0.0.1:{free_port()}"
    service = await stack.service(
        sandbox, server={"grpc_address": grpc_address}, args=("--workers", "2")
    )
    for _ in range(100):  # both workers print their addresses once they serve
        if sum(line.startswith("gateway listening") for line in service.process.lines) == 2:
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail(f"two workers did not start: {service.process.lines}")

    async def deliver_on_new_connection(n: int) -> None:
        # A channel per call: a fresh TCP connection, which the kernel may give either worker.
        async with grpc.aio.insecure_channel(
            grpc_address, options=[("grpc.use_local_subchannel_pool", 1)]
        ) as channel:
            event = pb.Event(message_id=message_id(), type="page", anonymous_id=f"anon_w{n}")
            await pb_grpc.AmperityServiceStub(channel).Deliver(
                pb.DeliverRequest(integration_id="web", event=event), timeout=10
            )

    await asyncio.gather(*(deliver_on_new_connection(n) for n in range(30)))
    async with httpx.AsyncClient(base_url=service.http_url) as http:
        text = (await http.get("/metrics")).text
    counted = sum(float(m.group(1)) for line in text.splitlines() if (m := DELIVERIES.match(line)))
    assert counted == 30
    # The days-to-expiry gauge: one series per key (the freshest worker's), not one per pid.
    expiry = [
        line
        for line in text.splitlines()
        if line.startswith("amperity_signal_token_days_to_expiry{")
    ]
    assert len(expiry) == 2 and not any('pid="' in line for line in expiry), text
    assert len(await sandbox.events()) == 30
    service.process.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(service.process.proc.wait(), 30) == 0
