"""Live Events fan-out: a watcher that falls behind is told how many records it missed."""

from __future__ import annotations

import asyncio

from amperity_signal.service.live import LiveEvents, LiveWatch, Watched
from tests.support import delivery_record

HANG_GUARD = 30.0
"""Seconds after which a record every test expects fails the test instead of hanging it."""


async def _next(watch: LiveWatch) -> Watched:
    return await asyncio.wait_for(anext(watch), HANG_GUARD)


def _reading(watch: LiveWatch) -> asyncio.Task[Watched]:
    """Start reading ``watch`` (subscribed already: ``LiveEvents.watch`` subscribes)."""
    return asyncio.create_task(_next(watch))


async def test_a_watcher_that_falls_behind_learns_how_many_records_it_missed() -> None:
    """Past the queue's size records are missed, and the next one received counts them."""
    live = LiveEvents(subscriber_queue=3)
    slow, fast = live.watch(), live.watch()
    first_slow, first_fast = _reading(slow), _reading(fast)
    live.publish(delivery_record(0))
    assert (await first_slow).missed_before == 0
    assert (await first_fast).missed_before == 0
    received_fast: list[Watched] = []
    for number in range(1, 6):  # the fast watcher reads each at once, the slow one not at all
        live.publish(delivery_record(number))
        received_fast.append(await _next(fast))
    assert [w.missed_before for w in received_fast] == [0] * 5
    received = [await _next(slow) for _ in range(3)]
    assert [(w.record.message_id, w.missed_before) for w in received] == [
        ("msg-1", 0),
        ("msg-2", 0),
        ("msg-3", 0),
    ]
    live.publish(delivery_record(6))
    caught_up = await _next(slow)
    assert (caught_up.record.message_id, caught_up.missed_before) == ("msg-6", 2)
    live.publish(delivery_record(7))
    assert (await _next(slow)).missed_before == 0  # counted once, then reset
    await slow.aclose()
    await fast.aclose()
    assert live.watchers == 0  # a closed watch no longer holds a queue


async def test_records_of_other_integrations_are_not_counted_as_missed() -> None:
    """A watch of one integration misses nothing when another integration is busy."""
    live = LiveEvents(subscriber_queue=1)
    watch = live.watch("web")
    first = _reading(watch)
    for number in range(10):
        live.publish(delivery_record(number, integration_id="app"))
    live.publish(delivery_record(10))
    received = await first
    assert (received.record.message_id, received.missed_before) == ("msg-10", 0)
    await watch.aclose()


async def test_replayed_records_come_first_and_are_never_marked_missed() -> None:
    """A watch replays the buffer (oldest first) before live records."""
    live = LiveEvents(buffer_size=2)
    for number in range(3):
        live.publish(delivery_record(number))
    watch = live.watch(replay=5)
    replayed = [await _next(watch) for _ in range(2)]
    assert [(w.record.message_id, w.missed_before) for w in replayed] == [
        ("msg-1", 0),
        ("msg-2", 0),
    ]
    await watch.aclose()


async def test_a_watch_is_subscribed_from_the_moment_it_is_made() -> None:
    """A record published before the watch is first read is still queued for it."""
    live = LiveEvents()
    watch = live.watch("web")
    assert live.watchers == 1
    live.publish(delivery_record(0))
    assert (await _next(watch)).record.message_id == "msg-0"
    await watch.aclose()
    assert live.watchers == 0  # closing leaves the hub, read to the end or not
