"""deliver_many: at-least-once delivery over DeliverStream, re-sends and reopened streams."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest

from amperity_signal_client import (
    AmperityClient,
    AsyncAmperityClient,
    PermissionDenied,
    RetryPolicy,
    Unavailable,
)
from amperity_signal_client.fields import EventFieldError
from datafly.amperity.v1 import amperity_service_pb2 as pb

from .conftest import ClientFactory
from .fakes import Failure, FakeSleep, RunningService, delivery_error


def events(count: int) -> list[pb.Event]:
    """``count`` track events with message ids e0, e1 and so on."""
    return [
        pb.Event(message_id=f"e{i}", type="track", event="Product Viewed", anonymous_id="a-1")
        for i in range(count)
    ]


async def collect(client: AsyncAmperityClient, items: object, **options: int) -> list[str]:
    """The message ids of every response deliver_many yields, asserting each succeeded."""
    seen = []
    async for response in client.deliver_many(items, **options):  # type: ignore[arg-type]
        assert response.HasField("result"), response
        seen.append(response.message_id)
    return seen


async def test_every_event_is_answered_exactly_once(
    running: RunningService, client: AsyncAmperityClient
) -> None:
    """Each event of a healthy stream gets one final response, carrying its message_id."""
    acknowledged = await collect(client, events(300), concurrency=16)

    assert sorted(acknowledged) == sorted(f"e{i}" for i in range(300))
    assert running.service.streams_opened == 1
    assert "x-pipeline-key" not in running.service.metadata[0]


async def test_retryable_per_event_errors_are_sent_again_after_their_delay(
    running: RunningService, client: AsyncAmperityClient, fake_sleep: FakeSleep
) -> None:
    """An event failing twice with UNAVAILABLE (retry after 0.5 s) is re-sent and delivered."""
    running.service.event_errors = {
        "e3": [delivery_error(14, "AMPERITY_UNAVAILABLE", 0.5)] * 2,
        "e5": [delivery_error(8, "RATE_LIMITED", 0.25)],
    }

    acknowledged = await collect(client, events(10))

    assert sorted(acknowledged) == sorted(f"e{i}" for i in range(10))
    assert running.service.received["e3"] == 3
    assert running.service.received["e5"] == 2
    assert sorted(fake_sleep.waits)[-2:] == [pytest.approx(0.5), pytest.approx(0.5)]
    assert all(wait >= 0.25 for wait in fake_sleep.waits)


async def test_non_retryable_per_event_errors_are_yielded_not_resent(
    running: RunningService, client: AsyncAmperityClient
) -> None:
    """A bad event fails its own response once; the others are delivered."""
    running.service.event_errors = {"e1": [delivery_error(3, "INVALID_EVENT")]}

    responses = [r async for r in client.deliver_many(events(3))]

    failed = [r for r in responses if r.HasField("error")]
    assert [r.message_id for r in failed] == ["e1"]
    assert failed[0].error.reason == "INVALID_EVENT"
    assert running.service.received["e1"] == 1
    assert len(responses) == 3


async def test_per_event_retries_are_bounded(
    running: RunningService, make_client: ClientFactory
) -> None:
    """An event that stays unavailable is yielded with its error after max_attempts sends."""
    running.service.event_errors = {"e0": [delivery_error(14, "AMPERITY_UNAVAILABLE")] * 10}
    client = make_client(retry=RetryPolicy(max_attempts=3))

    responses = [r async for r in client.deliver_many(events(1))]

    assert [r.error.code for r in responses] == [14]
    assert running.service.received["e0"] == 3


async def test_an_aborted_stream_is_reopened_and_everything_acknowledged(
    running: RunningService, client: AsyncAmperityClient
) -> None:
    """Streams aborted after 40 and 25 answers are reopened; every event is acknowledged."""
    running.service.stream_aborts = [40, 25]

    acknowledged = await collect(client, events(500), concurrency=32)

    assert sorted(acknowledged) == sorted(f"e{i}" for i in range(500))
    assert len(acknowledged) == len(set(acknowledged))
    assert running.service.streams_opened == 3
    assert all(running.service.answered_ok[f"e{i}"] >= 1 for i in range(500))


async def test_answers_sent_before_a_stream_ends_are_read_not_sent_again(
    running: RunningService, client: AsyncAmperityClient
) -> None:
    """Answers the service sent before it ended the stream count, however late they are read.

    A stopping service answers the events it took, then ends the stream (UNAVAILABLE).
    ``call.read()`` raises a call's status as soon as it has come, and answers not yet read
    were lost: their events were delivered again after the restart. Here the caller takes
    its first answer slowly while an event is still being written, so the other answers
    and the status are in by the time the client reads again. The old client lost them in
    about 4 runs of 10; five rounds make a pass on it unlikely.
    """
    for round_ in range(5):
        running.service.stream_aborts = [3]
        ids = [f"r{round_}-e{i}" for i in range(5)]
        sent = [
            pb.Event(message_id=i, type="track", event="Product Viewed", anonymous_id="a-1")
            for i in ids
        ]
        acknowledged = []
        async for response in client.deliver_many(sent, concurrency=4):
            assert response.HasField("result"), response
            acknowledged.append(response.message_id)
            if len(acknowledged) == 1:
                await asyncio.sleep(0.3)

        assert sorted(acknowledged) == ids
        assert {i: running.service.answered_ok[i] for i in ids} == dict.fromkeys(ids, 1)
    assert running.service.streams_opened == 10


async def test_a_stalled_stream_is_reopened_after_the_idle_timeout(
    running: RunningService, make_client: ClientFactory
) -> None:
    """A stream that never answers is abandoned after stream_idle_timeout and re-sent."""
    running.service.stream_stalls = 1
    client = make_client(stream_idle_timeout=0.2)

    acknowledged = await collect(client, events(5))

    assert sorted(acknowledged) == [f"e{i}" for i in range(5)]
    assert running.service.streams_opened == 2


async def test_a_stream_failing_with_a_non_retryable_status_raises(
    running: RunningService, client: AsyncAmperityClient
) -> None:
    """A stream-level PERMISSION_DENIED is raised instead of being retried."""
    running.service.stream_failure = Failure(
        grpc.StatusCode.PERMISSION_DENIED, "The key lacks the ingest scope.", "INGEST_KEY_REJECTED"
    )

    with pytest.raises(PermissionDenied, match="INGEST_KEY_REJECTED"):
        await collect(client, events(1), concurrency=1)

    # grpc.aio may report a write racing the abort as a broken stream, reopened once more.
    assert running.service.streams_opened <= 3


async def test_a_stream_that_cannot_be_reopened_raises_after_its_budget(
    running: RunningService, make_client: ClientFactory
) -> None:
    """A stream aborted every time is reopened up to stream_retry.max_attempts, then raises."""
    running.service.stream_aborts = [0] * 10
    client = make_client(stream_retry=RetryPolicy(max_attempts=3))

    with pytest.raises(Unavailable):
        await collect(client, events(2))

    assert running.service.streams_opened == 3


async def test_reopening_waits_draw_their_jitter_from_the_clients_rng(
    running: RunningService, make_client: ClientFactory, fake_sleep: FakeSleep
) -> None:
    """A seeded rng makes the reopen backoff reproducible, as it does for every other retry."""
    running.service.stream_aborts = [0] * 10
    policy = RetryPolicy(max_attempts=3)
    client = make_client(stream_retry=policy, rng=random.Random(11))

    with pytest.raises(Unavailable):
        await collect(client, events(1), concurrency=1)

    same = random.Random(11)
    assert fake_sleep.waits == [policy.backoff(1, None, same), policy.backoff(2, None, same)]


async def test_async_sources_and_json_events_are_accepted(
    running: RunningService, client: AsyncAmperityClient
) -> None:
    """deliver_many takes an async iterable of Datafly JSON events."""

    async def source() -> AsyncIterator[dict[str, object]]:
        for i in range(4):
            yield {"type": "track", "event": "Order Completed", "messageId": f"j{i}",
                   "anonymousId": "a-1"}  # fmt: skip

    acknowledged = await collect(client, source(), concurrency=2)

    assert sorted(acknowledged) == ["j0", "j1", "j2", "j3"]


async def test_events_without_message_id_get_one_and_events_sharing_one_wait(
    running: RunningService, client: AsyncAmperityClient
) -> None:
    """Ids are assigned when missing; a repeated id is sent after the first is answered."""
    batch = [
        pb.Event(type="page", anonymous_id="a-1"),
        pb.Event(message_id="same", type="page", anonymous_id="a-1"),
        pb.Event(message_id="same", type="page", anonymous_id="a-1"),
    ]

    acknowledged = await collect(client, batch)

    assert len(acknowledged) == 3
    assert acknowledged.count("same") == 2
    assert running.service.received["same"] == 2


async def test_an_empty_source_finishes_at_once(client: AsyncAmperityClient) -> None:
    """No events, no responses, no error."""
    assert await collect(client, []) == []


_BAD_CONCURRENCY: list[tuple[object, type[Exception], str]] = [
    (1.5, TypeError, "not float"),
    ("2", TypeError, "not str"),
    (True, TypeError, "not bool"),
    (0, ValueError, "got 0"),
]


@pytest.mark.parametrize("case", _BAD_CONCURRENCY)
async def test_a_concurrency_that_is_no_event_count_is_refused_naming_it(
    running: RunningService,
    client: AsyncAmperityClient,
    sync_client: AmperityClient,
    case: tuple[object, type[Exception], str],
) -> None:
    """Both clients refuse it before any stream, as the Node client does.

    A float was taken as it came and a string failed with ``'<' not supported``.
    """
    concurrency, error, says = case
    refused = rf"^deliver_many concurrency must be a whole number, 1 or more.*{says}"
    with pytest.raises(error, match=refused):
        await collect(client, events(1), concurrency=concurrency)  # type: ignore[arg-type]
    with pytest.raises(error, match=refused):
        list(sync_client.deliver_many(events(1), concurrency=concurrency))  # type: ignore[arg-type]
    assert running.service.streams_opened == 0


def _failing_source() -> Iterator[dict[str, str]]:
    yield {"type": "page", "anonymousId": "a-1", "messageId": "g1"}
    raise RuntimeError("the source broke")


_BAD_SOURCES: list[tuple[str, object, type[Exception], str]] = [
    ("bogus type", [{"type": "bogus", "anonymousId": "a-1"}], EventFieldError, "^type must"),
    ("None event", [None], EventFieldError, "^event must be a JSON object"),
    ("not iterable", 5, TypeError, "not iterable"),
    ("source raises", "generator", RuntimeError, "^the source broke$"),
]


@pytest.mark.parametrize("case", _BAD_SOURCES, ids=[case[0] for case in _BAD_SOURCES])
async def test_a_source_failing_before_the_first_stream_raises_at_once(
    running: RunningService,
    client: AsyncAmperityClient,
    case: tuple[str, object, type[Exception], str],
) -> None:
    """Its exception is raised from the iterator, as documented, within a second.

    It used to hang for ever: a feeder that failed while the run waited for the channel
    was never waited for, nor looked at, again.
    """
    _, source, error, says = case
    items = _failing_source() if source == "generator" else source
    with pytest.raises(error, match=says):
        await asyncio.wait_for(collect(client, items), 5)


async def test_a_source_failing_while_a_broken_stream_waits_to_reopen_raises_at_once(
    running: RunningService, make_client: ClientFactory
) -> None:
    """A malformed event arriving during a reopen's backoff ends the backoff with its error."""
    running.service.stream_aborts = [1]
    backing_off = asyncio.Event()

    async def long_backoff(seconds: float) -> None:
        backing_off.set()
        await asyncio.sleep(3600)

    async def source() -> AsyncIterator[dict[str, str]]:
        yield {"type": "page", "anonymousId": "a-1", "messageId": "m1"}
        yield {"type": "page", "anonymousId": "a-1", "messageId": "m2"}
        await backing_off.wait()
        yield {"type": "bogus", "anonymousId": "a-1"}

    client = make_client(sleep=long_backoff)
    answered: list[str] = []

    async def consume() -> None:
        async for response in client.deliver_many(source()):
            answered.append(response.message_id)

    with pytest.raises(EventFieldError, match=r"^type must"):
        await asyncio.wait_for(consume(), 5)
    assert answered == ["m1"]


async def test_a_none_among_the_events_is_refused_by_both_clients(
    running: RunningService, client: AsyncAmperityClient, sync_client: AmperityClient
) -> None:
    """None is a malformed event, as in the Node client, not the end of the source.

    The blocking client read its source with ``next(source, None)``, so a None ended it:
    the events after it were never sent and nothing said so.
    """
    batch: list[object] = [events(3)[0], None, events(3)[2]]
    refused = "^event must be a JSON object, not null"
    with pytest.raises(EventFieldError, match=refused):
        await asyncio.to_thread(lambda: list(sync_client.deliver_many(batch)))  # type: ignore[arg-type]
    with pytest.raises(EventFieldError, match=refused):
        await asyncio.wait_for(collect(client, batch), 5)
    assert running.service.received["e2"] == 0
