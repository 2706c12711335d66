"""The blocking AmperityClient, driven from a worker thread against the real server."""

from __future__ import annotations

import asyncio
from contextlib import closing
from itertools import islice

import grpc
import pytest

from amperity_signal_client import AmperityClient, InvalidArgument, RetryPolicy, Unavailable
from datafly.amperity.v1 import amperity_service_pb2 as pb

from .fakes import (
    Failure,
    FakeClock,
    FakeSyncSleep,
    RunningService,
    delivery_error,
    live_record,
    unavailable,
)

EVENT = pb.Event(message_id="m-1", type="track", event="Product Viewed", anonymous_id="a-1")


async def test_sync_unary_calls_work_and_retry(
    running: RunningService, sync_client: AmperityClient, sync_sleep: FakeSyncSleep
) -> None:
    """Deliver retries UNAVAILABLE honouring RetryInfo; enrich and browser_profile answer."""
    running.service.unary_failures = [unavailable(1.0), unavailable(1.0)]

    delivered = await asyncio.to_thread(sync_client.deliver, EVENT)
    enriched = await asyncio.to_thread(sync_client.enrich, EVENT)
    profile = await asyncio.to_thread(sync_client.browser_profile, "a-1")

    assert delivered.vendor_request.status_code == 202
    assert running.service.calls.count("Deliver") == 3
    assert len(sync_sleep.waits) == 2
    assert all(wait >= 1.0 for wait in sync_sleep.waits)
    assert enriched.resolved
    assert profile.provider == "amperity"


async def test_sync_errors_are_the_readable_exceptions(
    running: RunningService, sync_client: AmperityClient
) -> None:
    """A sync INVALID_ARGUMENT raises InvalidArgument with its field violations."""
    running.service.unary_failures = [
        Failure(
            grpc.StatusCode.INVALID_ARGUMENT,
            "The event is invalid.",
            "INVALID_EVENT",
            violations=(("event.type", "is required."),),
        )
    ]

    with pytest.raises(InvalidArgument) as raised:
        await asyncio.to_thread(sync_client.deliver, EVENT)

    assert raised.value.field_violations[0].field == "event.type"
    assert str(raised.value) == "INVALID_EVENT: The event is invalid."


async def test_sync_deliver_many_survives_aborts_and_event_retries(
    running: RunningService, sync_client: AmperityClient
) -> None:
    """The sync stream re-sends retryable events and reopens after an abort."""
    running.service.stream_aborts = [30]
    running.service.event_errors = {"e7": [delivery_error(14, "AMPERITY_UNAVAILABLE", 0.05)]}
    batch = [
        pb.Event(message_id=f"e{i}", type="track", event="Product Viewed", anonymous_id="a-1")
        for i in range(120)
    ]

    responses = await asyncio.to_thread(
        lambda: list(sync_client.deliver_many(batch, concurrency=8))
    )

    assert sorted(r.message_id for r in responses) == sorted(f"e{i}" for i in range(120))
    assert all(r.HasField("result") for r in responses)
    assert running.service.streams_opened == 2
    assert running.service.received["e7"] >= 2


async def test_sync_watch_deliveries_yields_records(
    running: RunningService, sync_client: AmperityClient
) -> None:
    """The sync watch_deliveries iterates the service's records."""
    for index in range(3):
        running.service.live.publish(live_record(f"m{index}", index))
    with closing(sync_client.watch_deliveries(replay=3)) as watch:
        records = await asyncio.to_thread(lambda: list(islice(watch, 3)))

    assert [record.message_id for record in records] == ["m0", "m1", "m2"]


async def test_sync_no_attempt_starts_after_a_wait_overran_the_total_timeout(
    running: RunningService,
) -> None:
    """The blocking client, too, starts no attempt once total_timeout has passed."""
    clock = FakeClock(overrun=2.0)
    running.service.clock = clock
    running.service.unary_failures = [unavailable(3.0)] * 10
    client = AmperityClient(
        running.target,
        integration_id="shop",
        retry=RetryPolicy(max_attempts=10, total_timeout=10.0),
        clock=clock,
        sleep=clock.sync_sleep,
    )

    with closing(client), pytest.raises(Unavailable):
        await asyncio.to_thread(client.deliver, EVENT, attempt_timeout=2.5)

    assert running.service.arrivals == [0.0, 5.0]
