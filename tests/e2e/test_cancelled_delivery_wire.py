"""A cancelled Deliver's Live Events record says how far its POST got, against a real sandbox.

The sandbox runs as its own process, told to hold or refuse answers (fault injection), and
the service reaches it over the real aiohttp transport. The service runs in this process
so that a test can see a call waiting for a connection or a rate-limit slot (nothing
outside shows it) before hanging up.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from amperity_signal.amperity import MemoryRateLimiter
from amperity_signal.service.app import Deps, Service, build_server
from datafly.amperity.v1 import amperity_service_pb2 as pb
from datafly.amperity.v1 import amperity_service_pb2_grpc as pb_grpc
from tests.contract.test_contract import event
from tests.e2e.stack import Sandbox, Stack
from tests.support import integration_dict, mint_keys, settings_for, until

pytestmark = pytest.mark.e2e

EVENTS = "events"
HOLD_MS = 60_000
"""An injected latency no test outlives: the POST stays at the sandbox until cancelled."""


class NotedSleep:
    """The limiter's sleep, which notes that a call is waiting for a slot."""

    def __init__(self) -> None:
        self.waiting = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        self.waiting.set()
        await asyncio.sleep(seconds)


@dataclass
class World:
    """A sandbox process and an in-process service, with a watch on its Live Events."""

    sandbox: Sandbox
    service: Service
    stub: pb_grpc.AmperityServiceStub
    watch: Any
    limiter_sleep: NotedSleep
    calls: list[Any] = field(default_factory=list)

    def deliver(self, **fields: Any) -> tuple[pb.Event, Any]:
        """Start a Deliver (not awaited); the event and the call, to cancel."""
        sent = event(type="track", event="add_to_cart", user_id="u-cancel", **fields)
        # The generated stub's types know only the sync call; the aio call can be cancelled.
        call: Any = self.stub.Deliver(
            pb.DeliverRequest(integration_id="web", event=sent), timeout=120
        )
        self.calls.append(call)
        return sent, call

    async def record_of(self, sent: pb.Event) -> pb.WatchDeliveriesResponse:
        """The Live Events record of ``sent`` (records of other events are skipped)."""
        while True:
            # Bounded so that a service which records nothing fails instead of hanging.
            record = await asyncio.wait_for(self.watch.read(), 30)
            assert isinstance(record, pb.WatchDeliveriesResponse)
            if record.message_id == sent.message_id:
                return record

    def counter(self, name: str, **labels: str) -> float:
        """A sample of the service's metrics (0 when absent)."""
        value = self.service.metrics.registry.get_sample_value(name, labels)
        return value or 0.0


async def faults_used_up(sandbox: Sandbox) -> bool:
    """Whether every injected fault was consulted: its requests reached the sandbox."""
    answer = await sandbox.inspector.get("/_sandbox/faults")
    faults: list[Any] = answer.json()["faults"]
    return not faults


@pytest.fixture
async def start(stack: Stack) -> AsyncIterator[Callable[..., Awaitable[World]]]:
    """Start a sandbox and the service (integration ``web``, no enrichment) on it."""
    worlds: list[World] = []

    async def make(**overrides: Any) -> World:
        sandbox = await stack.sandbox()
        table = integration_dict(sandbox.url, mint_keys(), profile_api_key=None, **overrides)
        sleep = NotedSleep()
        service = build_server(settings_for(table), Deps(limiter=MemoryRateLimiter(sleep=sleep)))
        await service.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{service.port}")
        stack.channels.append(channel)
        stub = pb_grpc.AmperityServiceStub(channel)
        watch: Any = stub.WatchDeliveries(pb.WatchDeliveriesRequest(integration_id="web"))
        await watch.initial_metadata()
        world = World(sandbox, service, stub, watch, sleep)
        worlds.append(world)
        return world

    yield make
    for world in worlds:
        for call in world.calls:
            call.cancel()
        world.watch.cancel()
        await world.service.stop(0)


async def test_a_deliver_cancelled_while_waiting_for_a_rate_limit_slot_was_not_sent(
    start: Callable[..., Awaitable[World]],
) -> None:
    """One request/s, one POST held at Amperity: the next, cancelled in the limiter, never left."""
    world = await start(rate_limit_per_second=1)
    await world.sandbox.fault(latency_ms=HOLD_MS, kind=EVENTS, count=1)
    world.deliver()
    await until(lambda: faults_used_up(world.sandbox))
    waiting, call = world.deliver()
    await until(world.limiter_sleep.waiting.is_set)

    call.cancel()
    record = await world.record_of(waiting)

    assert record.outcome == "cancelled"
    assert "while waiting for a rate-limit slot: it was not sent" in record.error
    assert "may have been sent" not in record.error
    assert (
        world.counter(
            "amperity_signal_deliveries_total",
            integration="web",
            amperity_type="add_to_cart",
            outcome="cancelled",
            reason="",
        )
        == 1
    )
    # Only the held POST ever reached the sandbox.
    assert len(await world.sandbox.requests(path_prefix="/prof/events/")) <= 1


async def test_a_deliver_cancelled_while_waiting_for_a_connection_was_not_sent(
    start: Callable[..., Awaitable[World]],
) -> None:
    """Every pooled connection holds a POST at Amperity: the next one waits, and never left."""
    world = await start()
    client = world.service.registry.get("web").client
    pooled = 32  # 8 shards of 4 connections, the client's defaults
    await world.sandbox.fault(latency_ms=HOLD_MS, kind=EVENTS, count=pooled)
    for _ in range(pooled):
        world.deliver()
    await until(lambda: faults_used_up(world.sandbox))
    waiting, call = world.deliver()
    await until(lambda: client.waiting_for_connection == 1)

    call.cancel()
    record = await world.record_of(waiting)

    assert record.outcome == "cancelled"
    assert "while waiting for a connection: it was not sent" in record.error
    assert client.waiting_for_connection == 0


async def test_a_deliver_cancelled_while_waiting_to_retry_names_the_attempt_not_sent(
    start: Callable[..., Awaitable[World]],
) -> None:
    """Answered 503 with Retry-After: cancelled before attempt 2, which was not sent."""
    world = await start()
    await world.sandbox.fault(status=503, retry_after=20, kind=EVENTS, count=1)
    sent, call = world.deliver()
    await until(
        lambda: (
            world.counter(
                "amperity_signal_amperity_retries_total",
                integration="web",
                endpoint=EVENTS,
                cause="503",
            )
            == 1
        )
    )

    call.cancel()
    record = await world.record_of(sent)

    assert record.outcome == "cancelled"
    assert "cancelled before attempt 2 was posted to Amperity" in record.error
    assert "while waiting to retry: it was not sent; attempt 1 was answered 503" in record.error
    assert "may have been sent" not in record.error
    assert [r["status"] for r in await world.sandbox.requests(path_prefix="/prof/events/")] == [503]


async def test_a_deliver_cancelled_once_its_post_reached_amperity_may_have_been_sent(
    start: Callable[..., Awaitable[World]],
) -> None:
    """The sandbox holds the POST it received: cancelled then, attempt 1 may have arrived."""
    world = await start()
    await world.sandbox.fault(latency_ms=HOLD_MS, kind=EVENTS, count=1)
    sent, call = world.deliver()
    await until(lambda: faults_used_up(world.sandbox))

    call.cancel()
    record = await world.record_of(sent)

    assert record.outcome == "cancelled"
    assert "attempt 1's POST may have been sent" in record.error
    assert "look for it there by message_id" in record.error
