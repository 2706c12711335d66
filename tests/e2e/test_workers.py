"""``serve --workers 2``: two processes share the ports and /metrics counts for both."""

from __future__ import annotations

import asyncio
import json
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


async def test_configuration_warnings_are_logged_once_whatever_the_workers(stack: Stack) -> None:
    """Key expiry, NO_PROXY and route lines once under --workers 2; each worker's own twice.

    The keys minted for the stack expire within the hour (a warning each), and NO_PROXY
    carries an entry that is no range (a warning); the sandbox is reached directly.
    """
    sandbox = await stack.sandbox()
    env = {"HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": "127.0.0.1,10.0.0/8"}
    service = await stack.service(sandbox, args=("--workers", "2"), env=env)
    for _ in range(100):
        if sum(line.startswith("gateway listening") for line in service.process.lines) == 2:
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail(f"two workers did not start: {service.process.lines}")
    service.process.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(service.process.proc.wait(), 30) == 0
    messages = [json.loads(line)["msg"] for line in service.process.log.read_text().splitlines()]

    def count(fragment: str) -> int:
        return sum(fragment in message for message in messages)

    assert count("api_key expires in") == 2, messages  # api_key and profile_api_key
    assert count("NO_PROXY entry '10.0.0/8' is ignored") == 1, messages
    assert count("integration web reaches") == 1, messages
    assert count("shutting down") == 2, messages  # each worker's own line
    assert sum(line.startswith("grpc listening") for line in service.process.lines) == 2
