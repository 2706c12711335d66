"""Deadlines and retries of unary calls, against a real gRPC server."""

from __future__ import annotations

import random
from contextlib import aclosing

import grpc
import pytest

from amperity_signal_client import (
    AsyncAmperityClient,
    ResourceExhausted,
    RetryPolicy,
    Unavailable,
)
from datafly.amperity.v1 import amperity_service_pb2 as pb

from .conftest import ClientFactory
from .fakes import Failure, FakeClock, FakeSleep, RunningService, live_record, unavailable

DEADLINE_ROUNDING = 0.05
"""Seconds a propagated deadline may grow by on the wire (grpc-timeout rounding)."""

EVENT = pb.Event(message_id="m-1", type="track", event="Product Viewed", anonymous_id="a-1")


async def test_unavailable_with_retry_info_is_retried_after_at_least_the_delay(
    running: RunningService, client: AsyncAmperityClient, fake_sleep: FakeSleep
) -> None:
    """Two UNAVAILABLEs carrying RetryInfo, then success: three calls, each wait ≥ delay."""
    running.service.unary_failures = [unavailable(1.5), unavailable(1.5)]

    response = await client.deliver(EVENT)

    assert response.amperity_type == "view_item"
    assert running.service.calls == ["Deliver"] * 3
    assert len(fake_sleep.waits) == 2
    assert all(wait >= 1.5 for wait in fake_sleep.waits)


async def test_resource_exhausted_is_retried(
    running: RunningService, client: AsyncAmperityClient
) -> None:
    """A rate-limited call is retried and then succeeds."""
    running.service.unary_failures = [
        Failure(grpc.StatusCode.RESOURCE_EXHAUSTED, "Slow down.", "RATE_LIMITED", retry_delay=0.2)
    ]

    response = await client.browser_profile("a-1")

    assert response.provider == "amperity"
    assert running.service.calls == ["BrowserProfile", "BrowserProfile"]


async def test_retries_stop_after_max_attempts_with_the_last_error(
    running: RunningService, make_client: ClientFactory
) -> None:
    """An always-unavailable service gets max_attempts calls, then Unavailable is raised."""
    running.service.unary_failures = [unavailable(0.1)] * 10
    client = make_client(retry=RetryPolicy(max_attempts=3))

    with pytest.raises(Unavailable) as raised:
        await client.deliver(EVENT)

    assert running.service.calls == ["Deliver"] * 3
    assert raised.value.reason == "AMPERITY_UNAVAILABLE"
    assert raised.value.retry_after == pytest.approx(0.1)


async def test_no_retry_starts_past_the_total_time_budget(
    running: RunningService, make_client: ClientFactory
) -> None:
    """A RetryInfo delay longer than the remaining budget ends the retries at once."""
    running.service.unary_failures = [
        Failure(grpc.StatusCode.RESOURCE_EXHAUSTED, "Slow down.", "RATE_LIMITED", retry_delay=5.0)
    ]
    client = make_client(retry=RetryPolicy(total_timeout=2.0))

    with pytest.raises(ResourceExhausted):
        await client.deliver(EVENT)

    assert running.service.calls == ["Deliver"]


async def test_attempts_start_and_waits_end_within_the_total_timeout(
    running: RunningService, make_client: ClientFactory
) -> None:
    """All attempts and waits fit in total_timeout; the last attempt gets what is left."""
    clock = FakeClock()
    running.service.clock = clock
    running.service.unary_failures = [unavailable(3.0)] * 10
    retry = RetryPolicy(max_attempts=10, total_timeout=10.0)
    client = make_client(retry=retry, clock=clock, sleep=clock.sleep)

    with pytest.raises(Unavailable):
        await client.deliver(EVENT, attempt_timeout=2.5)

    # Attempts at 0, 3, 6 and 9 s: a fifth would start at 12 s, so its wait never began.
    assert running.service.arrivals == [0.0, 3.0, 6.0, 9.0]
    assert clock.waits == [3.0, 3.0, 3.0]
    deadlines = [d for d in running.service.deadlines if d is not None]
    assert all(d <= 2.5 + DEADLINE_ROUNDING for d in deadlines)
    assert deadlines[-1] <= retry.total_timeout - 9.0 + DEADLINE_ROUNDING


async def test_no_attempt_starts_after_a_wait_overran_the_total_timeout(
    running: RunningService, make_client: ClientFactory
) -> None:
    """A wait that lasts longer than asked past total_timeout ends with the last error."""
    clock = FakeClock(overrun=2.0)
    running.service.clock = clock
    running.service.unary_failures = [unavailable(3.0)] * 10
    retry = RetryPolicy(max_attempts=10, total_timeout=10.0)
    client = make_client(retry=retry, clock=clock, sleep=clock.sleep)

    with pytest.raises(Unavailable) as raised:
        await client.deliver(EVENT, attempt_timeout=2.5)

    # The second wait was asked at 5 s (5 + 3 < 10) and ended at 10 s: no third attempt.
    assert running.service.arrivals == [0.0, 5.0]
    assert all(arrival < retry.total_timeout for arrival in running.service.arrivals)
    assert raised.value.reason == "AMPERITY_UNAVAILABLE"


async def test_each_attempt_carries_the_default_deadline(
    running: RunningService, make_client: ClientFactory
) -> None:
    """Unary calls have a deadline even when the caller sets none."""
    client = make_client(default_timeout=3.0)

    await client.enrich(EVENT)

    remaining = running.service.deadlines[0]
    assert remaining is not None
    # The deadline travels as a grpc-timeout header, which gRPC rounds up to its unit, so
    # the server can see a few milliseconds more than the client set (3.0096 s was seen).
    assert 0 < remaining <= 3.0 + DEADLINE_ROUNDING


async def test_retries_keep_the_message_id_assigned_to_an_event_without_one(
    running: RunningService, client: AsyncAmperityClient
) -> None:
    """An event without a message_id gets one UUID, the same on every attempt."""
    running.service.unary_failures = [unavailable(0.0)]

    response = await client.deliver(pb.Event(type="page", anonymous_id="a-1"))

    ids = {request.event.message_id for request in running.service.requests}
    assert len(ids) == 1
    assert response.message_id in ids
    assert len(response.message_id) == 36


async def test_pipeline_key_travels_as_metadata_and_in_browser_profile(
    running: RunningService, make_client: ClientFactory
) -> None:
    """A client built with a pipeline key sends it as x-pipeline-key on every call."""
    client = make_client(integration_id=None, pipeline_key="pk_live_1")

    await client.deliver(EVENT)
    await client.browser_profile("a-1")

    assert all(seen.get("x-pipeline-key") == "pk_live_1" for seen in running.service.metadata)
    assert running.service.requests[0].integration_id == ""
    assert running.service.requests[1].pipeline_key == "pk_live_1"


async def test_watch_deliveries_streams_the_replayed_records(
    running: RunningService, client: AsyncAmperityClient
) -> None:
    """watch_deliveries yields the service's records for the client's integration."""
    running.service.live.publish(live_record("m0", 1))
    running.service.live.publish(live_record("m1", 2))
    async with aclosing(client.watch_deliveries(replay=2)) as watch:
        records = [await anext(watch), await anext(watch)]

    assert [record.message_id for record in records] == ["m0", "m1"]
    assert running.service.requests[0].integration_id == "shop"


def test_backoff_is_full_jitter_under_a_growing_cap() -> None:
    """Waits are drawn from [0, cap] with the cap doubling up to max_backoff."""
    policy = RetryPolicy(initial_backoff=0.1, max_backoff=1.0, multiplier=2.0)
    rng = random.Random(3)

    for retry, cap in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (9, 1.0)]:
        waits = [policy.backoff(retry, rng=rng) for _ in range(200)]
        assert all(0.0 <= wait <= cap for wait in waits)
        assert max(waits) > cap * 0.8


def test_retry_info_delay_is_the_least_wait() -> None:
    """The server's RetryInfo delay floors the jittered backoff."""
    policy = RetryPolicy(initial_backoff=0.1)

    assert policy.backoff(1, minimum=2.5, rng=random.Random(1)) == 2.5


def test_only_unavailable_and_resource_exhausted_are_retryable() -> None:
    """The retry decision refuses every other code and respects max_attempts."""
    policy = RetryPolicy(max_attempts=2)

    for code in grpc.StatusCode:
        delay = policy.next_delay(code=code, attempt=1, elapsed=0.0)
        retryable = code in {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert (delay is not None) is retryable
    assert policy.next_delay(code=grpc.StatusCode.UNAVAILABLE, attempt=2, elapsed=0.0) is None


async def test_a_call_the_service_dropped_unstarted_is_sent_again_by_grpc(
    running: RunningService, client: AsyncAmperityClient, fake_sleep: FakeSleep
) -> None:
    """CANCELLED before any answer (a stopping service's unstarted call): gRPC resends it."""
    running.service.unary_failures = [
        Failure(grpc.StatusCode.CANCELLED, "CANCELLED", "SERVICE_STOPPING")
    ]

    response = await client.deliver(EVENT)

    assert response.amperity_type == "view_item"
    assert running.service.calls == ["Deliver", "Deliver"]
    assert fake_sleep.waits == []  # gRPC's retry (RETRY_DROPPED_CALLS), not the policy's
