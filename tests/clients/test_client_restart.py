"""deliver_many across a service that goes away and comes back on the same port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from amperity_signal_client import AsyncAmperityClient, RetryPolicy
from datafly.amperity.v1 import amperity_service_pb2 as pb

from .fakes import ScriptedService, start_service


async def test_deliver_many_survives_a_service_restart() -> None:
    """Every event is acknowledged although the server stops and restarts mid-stream."""
    service = ScriptedService()
    first = await start_service(service=service)
    port = int(first.target.rsplit(":", 1)[1])
    client = AsyncAmperityClient(
        first.target,
        integration_id="shop",
        stream_retry=RetryPolicy(max_attempts=50, initial_backoff=0.05, max_backoff=0.2),
        channel_options=(("grpc.max_reconnect_backoff_ms", 200),),
    )
    restarted = asyncio.Event()
    halfway = asyncio.Event()

    async def source() -> AsyncIterator[pb.Event]:
        for i in range(2000):
            if i == 800:
                await restarted.wait()
            yield pb.Event(message_id=f"e{i}", type="track", event="Viewed", anonymous_id="a")

    async def restart() -> None:
        await halfway.wait()
        await first.server.stop(None)
        await asyncio.sleep(0.3)
        second = await start_service(port=port, service=service)
        servers.append(second.server)
        restarted.set()

    servers = [first.server]
    restarter = asyncio.create_task(restart())
    try:
        acknowledged = []
        async for response in client.deliver_many(source()):
            acknowledged.append(response.message_id)
            if len(acknowledged) == 400:
                halfway.set()
        await restarter
    finally:
        await client.aclose()
        for server in servers:
            await server.stop(None)

    assert sorted(acknowledged) == sorted(f"e{i}" for i in range(2000))
    assert service.streams_opened >= 2
    assert all(service.answered_ok[f"e{i}"] >= 1 for i in range(2000))
