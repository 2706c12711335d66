"""watch_deliveries across broken streams: reconnects, replay recovery, no repeats."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import aclosing, closing
from itertools import islice

import grpc
import pytest

from amperity_signal_client import (
    AmperityClient,
    AsyncAmperityClient,
    NotFound,
    RetryPolicy,
    Unavailable,
)
from amperity_signal_client.watch import (
    RECONNECT_REPLAY,
    DeliveryWatch,
    RecentRecords,
    watch_ended,
)
from datafly.amperity.v1 import amperity_service_pb2 as pb

from .conftest import ClientFactory
from .fakes import (
    Failure,
    FakeSleep,
    FakeSyncSleep,
    RunningService,
    ScriptedService,
    live_record,
    start_service,
)

# Only guards against a hang; no test depends on how long anything takes.
HANG_GUARD = 10.0
FAST_RECONNECT = (
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 200),
)
NOT_FOUND = Failure(
    grpc.StatusCode.NOT_FOUND,
    "No integration has the id 'shop'; use an [[integrations]] id of the config.",
    "INTEGRATION_NOT_FOUND",
    {"integration_id": "shop"},
)


async def next_record(
    watch: AsyncIterator[pb.WatchDeliveriesResponse],
) -> pb.WatchDeliveriesResponse:
    """The watch's next record."""
    return await asyncio.wait_for(anext(watch), HANG_GUARD)


def message_ids(records: list[pb.WatchDeliveriesResponse]) -> list[str]:
    """The records' message_ids, in order."""
    return [record.message_id for record in records]


def replays(service: ScriptedService) -> list[int]:
    """The replay each WatchDeliveries call asked for, in order."""
    return [request.replay for request in service.requests]


async def test_a_watch_survives_a_service_restart_with_every_record_once_in_order(
    fake_sleep: FakeSleep,
) -> None:
    """Records from before the stop, while it is down and after the restart arrive once each."""
    service = ScriptedService()
    first = await start_service(service=service)
    servers = [first.server]
    client = AsyncAmperityClient(
        first.target,
        integration_id="shop",
        channel_options=FAST_RECONNECT,
        sleep=fake_sleep,
        rng=random.Random(7),
    )
    service.live.publish(live_record("m1", 1))
    service.live.publish(live_record("m2", 2))
    try:
        async with aclosing(client.watch_deliveries(replay=2)) as watch:
            seen = [await next_record(watch), await next_record(watch)]
            service.live.publish(live_record("m3", 3))
            seen.append(await next_record(watch))
            await first.server.stop(None)
            service.live.publish(live_record("m4", 4))
            service.live.publish(live_record("m5", 5))
            second = await start_service(port=int(first.target.rsplit(":", 1)[1]), service=service)
            servers.append(second.server)
            seen += [await next_record(watch), await next_record(watch)]
            service.live.publish(live_record("m6", 6))
            seen.append(await next_record(watch))
    finally:
        await client.aclose()
        for server in servers:
            await server.stop(None)

    assert message_ids(seen) == ["m1", "m2", "m3", "m4", "m5", "m6"]
    assert replays(service)[0] == 2
    assert replays(service)[1:] and set(replays(service)[1:]) == {RECONNECT_REPLAY}
    assert fake_sleep.waits


async def test_records_the_replay_repeats_are_not_yielded_again(
    running: RunningService, client: AsyncAmperityClient, fake_sleep: FakeSleep
) -> None:
    """An ended stream is reopened after a backoff; of the replay, only the missed m4 is new."""
    live = running.service.live
    for second in (1, 2, 3):
        live.publish(live_record(f"m{second}", second))
    async with aclosing(client.watch_deliveries(replay=3)) as watch:
        seen = [await next_record(watch) for _ in range(3)]
        live.end_watches()
        live.publish(live_record("m4", 4))
        seen.append(await next_record(watch))
        live.publish(live_record("m5", 5))
        seen.append(await next_record(watch))

    assert message_ids(seen) == ["m1", "m2", "m3", "m4", "m5"]
    assert replays(running.service) == [3, RECONNECT_REPLAY]
    assert len(fake_sleep.waits) == 1


async def test_a_message_delivered_again_later_is_a_new_record(
    running: RunningService, client: AsyncAmperityClient
) -> None:
    """Records are told apart by delivery time too: a redelivered message_id is shown again."""
    live = running.service.live
    live.publish(live_record("m1", 1))
    async with aclosing(client.watch_deliveries(replay=1)) as watch:
        first = await next_record(watch)
        live.end_watches()
        live.publish(live_record("m1", 2))
        again = await next_record(watch)

    assert (first.message_id, again.message_id) == ("m1", "m1")
    assert again.delivered_at.seconds - first.delivered_at.seconds == 1


async def test_a_reconnect_does_not_replay_records_from_before_the_watch(
    running: RunningService, client: AsyncAmperityClient
) -> None:
    """The large replay of a reconnect skips records older than the first one yielded."""
    live = running.service.live
    live.publish(live_record("before-watch", 1))
    live.publish(live_record("m2", 2))
    async with aclosing(client.watch_deliveries(replay=1)) as watch:
        seen = [await next_record(watch)]
        live.end_watches()
        live.publish(live_record("m3", 3))
        seen.append(await next_record(watch))

    assert message_ids(seen) == ["m2", "m3"]


async def test_an_unknown_integration_raises_at_once_without_reconnecting(
    running: RunningService, client: AsyncAmperityClient, fake_sleep: FakeSleep
) -> None:
    """NOT_FOUND is not retryable: NotFound is raised by the first call, none follows."""
    running.service.watch_failures = [NOT_FOUND]
    async with aclosing(client.watch_deliveries()) as watch:
        with pytest.raises(NotFound) as raised:
            await next_record(watch)

    assert raised.value.reason == "INTEGRATION_NOT_FOUND"
    assert running.service.calls == ["WatchDeliveries"]
    assert fake_sleep.waits == []


async def test_the_last_error_is_raised_when_the_reconnects_run_out(
    running: RunningService, make_client: ClientFactory, fake_sleep: FakeSleep
) -> None:
    """A service failing every call exhausts stream_retry; the last failure is raised."""
    running.service.watch_failures = [
        Failure(grpc.StatusCode.UNAVAILABLE, f"Restarting, attempt {n}.", "SERVICE_RESTARTING")
        for n in (1, 2, 3)
    ]
    client = make_client(stream_retry=RetryPolicy(max_attempts=3))
    async with aclosing(client.watch_deliveries()) as watch:
        with pytest.raises(Unavailable) as raised:
            await next_record(watch)

    assert raised.value.message == "Restarting, attempt 3."
    assert running.service.calls == ["WatchDeliveries"] * 3
    assert len(fake_sleep.waits) == 2


async def test_without_reconnect_a_stopped_service_raises(
    running: RunningService, client: AsyncAmperityClient, fake_sleep: FakeSleep
) -> None:
    """reconnect=False raises Unavailable on the first break and opens no second call."""
    running.service.live.publish(live_record("m1", 1))
    async with aclosing(client.watch_deliveries(replay=1, reconnect=False)) as watch:
        first = await next_record(watch)
        await running.server.stop(None)
        with pytest.raises(Unavailable):
            await next_record(watch)

    assert first.message_id == "m1"
    assert running.service.calls == ["WatchDeliveries"]
    assert fake_sleep.waits == []


async def test_without_reconnect_the_watch_ends_with_the_stream(
    running: RunningService, client: AsyncAmperityClient
) -> None:
    """reconnect=False ends the iteration when the service ends the stream."""
    running.service.live.publish(live_record("m1", 1))
    async with aclosing(client.watch_deliveries(replay=1, reconnect=False)) as watch:
        first = await next_record(watch)
        running.service.live.end_watches()
        with pytest.raises(StopAsyncIteration):
            await next_record(watch)

    assert first.message_id == "m1"
    assert running.service.calls == ["WatchDeliveries"]


async def test_sync_watch_reconnects_without_repeating_records(
    running: RunningService, sync_client: AmperityClient, sync_sleep: FakeSyncSleep
) -> None:
    """The blocking watch reopens an ended stream and skips what the replay repeats."""
    live = running.service.live
    live.publish(live_record("m1", 1))
    live.publish(live_record("m2", 2))
    with closing(sync_client.watch_deliveries(replay=2)) as watch:
        seen = await asyncio.wait_for(asyncio.to_thread(lambda: list(islice(watch, 2))), HANG_GUARD)
        live.end_watches()
        live.publish(live_record("m3", 3))
        seen.append(await asyncio.wait_for(asyncio.to_thread(next, watch), HANG_GUARD))

    assert message_ids(seen) == ["m1", "m2", "m3"]
    assert replays(running.service) == [2, RECONNECT_REPLAY]
    assert len(sync_sleep.waits) == 1


async def test_sync_watch_raises_not_found_at_once(
    running: RunningService, sync_client: AmperityClient, sync_sleep: FakeSyncSleep
) -> None:
    """The blocking watch raises NotFound from the first call and does not reconnect."""
    running.service.watch_failures = [NOT_FOUND]
    with closing(sync_client.watch_deliveries()) as watch, pytest.raises(NotFound):
        await asyncio.wait_for(asyncio.to_thread(next, watch), HANG_GUARD)

    assert running.service.calls == ["WatchDeliveries"]
    assert sync_sleep.waits == []


def test_a_reopened_call_asks_for_the_buffer_once_a_record_came_through() -> None:
    """Until a record arrives the caller's replay is asked for, then RECONNECT_REPLAY."""
    watch = DeliveryWatch("shop", 5, RetryPolicy(), lambda: 0.0, random.Random(7))
    assert watch.request() == pb.WatchDeliveriesRequest(integration_id="shop", replay=5)

    watch.admit(live_record("m1", 1))

    assert watch.request() == pb.WatchDeliveriesRequest(
        integration_id="shop", replay=RECONNECT_REPLAY
    )


def test_only_new_records_give_back_the_reconnect_attempts() -> None:
    """Repeats prove nothing: a service that keeps ending the watch still exhausts it."""
    watch = DeliveryWatch("shop", 0, RetryPolicy(max_attempts=2), lambda: 0.0, random.Random(7))
    assert watch.admit(live_record("m1", 1))
    watch.delay_after(watch_ended())
    assert watch.admit(live_record("m2", 2))
    watch.delay_after(watch_ended())
    assert not watch.admit(live_record("m2", 2))

    with pytest.raises(Unavailable):
        watch.delay_after(watch_ended())


def test_an_answered_call_restarts_the_reconnect_time_budget() -> None:
    """An idle watch the service answered again outlives restarts hours apart."""
    now = [0.0]
    policy = RetryPolicy(max_attempts=5, total_timeout=10.0)
    watch = DeliveryWatch("shop", 0, policy, lambda: now[0], random.Random(7))
    watch.delay_after(watch_ended())
    watch.answered()
    now[0] = 3600.0
    watch.delay_after(watch_ended())
    now[0] = 7200.0

    with pytest.raises(Unavailable):
        watch.delay_after(watch_ended())


def test_the_memory_of_yielded_records_is_bounded() -> None:
    """Only the last ``capacity`` keys are remembered; older ones are forgotten."""
    recent = RecentRecords(capacity=3)
    keys = [("shop", f"m{index}", index, 0) for index in range(5)]
    assert all(recent.add(key) for key in keys)
    assert len(recent) == 3
    assert not recent.add(keys[4])

    assert recent.add(keys[0])


_BAD_REPLAYS: list[tuple[object, type[Exception], str]] = [
    (1.5, TypeError, "not float"),
    ("2", TypeError, "not str"),
    (True, TypeError, "not bool"),
    (-1, ValueError, "got -1"),
    (2**33, ValueError, "got 8589934592"),
]


@pytest.mark.parametrize("case", _BAD_REPLAYS)
async def test_a_replay_that_is_no_record_count_is_refused_naming_it_before_any_call(
    running: RunningService,
    client: AsyncAmperityClient,
    sync_client: AmperityClient,
    case: tuple[object, type[Exception], str],
) -> None:
    """Both clients, reconnecting or not: the error names replay; nothing is sent.

    Protobuf refused these with errors naming no field (``Value out of range``), and the
    Node client sent ``"2"`` as 2, ``1.5`` as 1 and ``2**33`` as 0.
    """
    replay, error, says = case
    refused = rf"^replay must be a whole number .*{says}"
    for reconnect in (True, False):
        watch = client.watch_deliveries(replay, reconnect=reconnect)  # type: ignore[arg-type]
        async with aclosing(watch):
            with pytest.raises(error, match=refused):
                await next_record(watch)
        sync_watch = sync_client.watch_deliveries(replay, reconnect=reconnect)  # type: ignore[arg-type]
        with closing(sync_watch), pytest.raises(error, match=refused):
            next(sync_watch)
    assert running.service.calls == []
