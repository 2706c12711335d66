"""The in-memory per-tenant limiter: no one-second window of arrivals ever over the limit."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
import socket
import time
from bisect import bisect_left
from collections.abc import Coroutine, Sequence

import pytest

from amperity_signal.amperity import MemoryRateLimiter
from amperity_signal.amperity.ratelimit import Share, process_share
from amperity_signal.config import CacheSettings, Settings
from amperity_signal.errors import AmperityUnavailable
from amperity_signal.runner import with_workers
from amperity_signal.service.app import build_rate_limiter

KEY = "acme@https://acme.amperity.com"


class VirtualTime:
    """A virtual clock for many concurrent sleepers: time jumps to the next wake-up."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._finished = 0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (self.now + seconds, next(self._order), future))
        await future

    async def settle(self) -> None:
        """Let every runnable task run until all of them wait for a timer or are done.

        Quiet means ten event-loop turns in a row without a new timer or a finished task.
        """
        quiet = 0
        state = (-1, -1)
        while quiet < 10:
            await asyncio.sleep(0)
            now_state = (len(self._timers), self._finished)
            quiet = quiet + 1 if now_state == state else 0
            state = now_state

    async def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` on, waking due sleepers in time order."""
        until = self.now + seconds
        await self.settle()
        while self._timers and self._timers[0][0] <= until:
            when, _, future = heapq.heappop(self._timers)
            self.now = max(self.now, when)
            if not future.done():  # a cancelled sleeper leaves its timer behind
                future.set_result(None)
            await self.settle()
        self.now = until

    def spawn(self, work: Coroutine[object, object, None]) -> asyncio.Task[None]:
        """Start ``work`` as a task that ``settle`` waits for."""
        task = asyncio.create_task(work)
        task.add_done_callback(self._count_finished)
        return task

    def _count_finished(self, _: object) -> None:
        self._finished += 1

    async def run(self, work: Sequence[Coroutine[object, object, None]]) -> None:
        """Run ``work`` concurrently, waking sleepers in time order until all is done."""
        tasks = [self.spawn(item) for item in work]
        while True:
            await self.settle()
            if all(task.done() for task in tasks):
                break
            when, _, future = heapq.heappop(self._timers)
            self.now = max(self.now, when)
            if not future.done():
                future.set_result(None)
        for task in tasks:
            task.result()


def busiest_window(times: Sequence[float], length: float = 1.0) -> int:
    """The most events in any half-open window [t, t + length), one second by default.

    The maximum over all windows is reached by a window starting at an event, so checking
    the window that starts at every event checks them all.
    """
    ordered = sorted(times)
    return max(bisect_left(ordered, start + length) - index for index, start in enumerate(ordered))


async def test_arrivals_up_to_a_second_after_their_grant_never_exceed_the_limit() -> None:
    """1,500 requests arriving up to 1 s after their grant: every second of arrivals <= 100."""
    time = VirtualTime()
    limiter = MemoryRateLimiter(clock=time.clock, sleep=time.sleep)
    rng = random.Random(11)
    grants: list[float] = []
    arrivals: list[float] = []

    async def one(offered: float) -> None:
        await time.sleep(offered)
        async with limiter.slot(KEY, 100, None):
            grants.append(time.now)
            await time.sleep(rng.uniform(0.0, 1.0))  # the request travels to Amperity
            arrivals.append(time.now)
            await time.sleep(rng.uniform(0.0, 0.2))  # and its answer travels back

    # Bursts at a few instants plus a steady trickle.
    offered = [0.0] * 500 + [2.5] * 300 + [rng.uniform(0, 10) for _ in range(700)]
    await time.run([one(at) for at in offered])

    assert len(arrivals) == 1_500
    assert busiest_window(arrivals) <= 100
    assert busiest_window(grants) == 100  # the limit is reached, not just underused


async def test_a_burst_of_instant_requests_is_granted_limit_per_second() -> None:
    """1,200 requests that end at once, limit 500: 500 now, 500 a second later, 200 after two."""
    time = VirtualTime()
    limiter = MemoryRateLimiter(clock=time.clock, sleep=time.sleep)
    waits: list[float] = []

    async def one() -> None:
        async with limiter.slot("t", 500, None) as waited:
            waits.append(waited)

    await time.run([one() for _ in range(1_200)])

    assert sorted(waits) == [0.0] * 500 + [1.0] * 500 + [2.0] * 200


async def test_a_released_slot_frees_capacity_one_window_after_completion() -> None:
    """A slot held 0.4 s is free again 1 s after its end: a waiter from 0.1 s gets it at 1.4 s."""
    time = VirtualTime(start=0.0)
    limiter = MemoryRateLimiter(clock=time.clock, sleep=time.sleep)
    waits: list[float] = []

    async def holder() -> None:
        async with limiter.slot("t", 1, None):
            await time.sleep(0.4)

    async def waiter() -> None:
        await time.sleep(0.1)
        async with limiter.slot("t", 1, None) as waited:
            waits.append(waited)

    await time.run([holder(), waiter()])

    assert waits == [pytest.approx(1.3)]
    # At 0.1 s only an in-flight request holds the slot: nothing can free before 1.1 s.
    assert time.sleeps[2:4] == [pytest.approx(1.0), pytest.approx(0.3)]


async def test_no_slot_before_the_deadline_raises_rate_limited_locally() -> None:
    """When the next slot comes after the deadline: RATE_LIMITED_LOCALLY with retry_after."""
    time = VirtualTime()
    limiter = MemoryRateLimiter(clock=time.clock, sleep=time.sleep)
    for _ in range(2):
        async with limiter.slot("t", 2, None) as waited:
            assert waited == 0.0

    with pytest.raises(AmperityUnavailable) as caught:
        async with limiter.slot("t", 2, time.now + 0.5):
            pass

    assert caught.value.reason == "RATE_LIMITED_LOCALLY"
    assert caught.value.retry_after == pytest.approx(1.0)
    assert "rate_limit_per_second" in caught.value.message


async def test_slots_held_in_flight_refuse_a_deadline_under_a_window_at_once() -> None:
    """A request in flight frees its slot a window after it ends at the earliest: no waiting."""
    time = VirtualTime()
    limiter = MemoryRateLimiter(clock=time.clock, sleep=time.sleep)
    async with limiter.slot("t", 1, None):
        with pytest.raises(AmperityUnavailable) as caught:
            async with limiter.slot("t", 1, time.now + 0.9):
                pass

    assert caught.value.retry_after == pytest.approx(1.0)
    assert time.sleeps == []


async def test_a_refused_request_takes_no_slot() -> None:
    """A deadline refusal takes nothing: the next caller gets the slot a window after the end."""
    time = VirtualTime()
    limiter = MemoryRateLimiter(clock=time.clock, sleep=time.sleep)
    async with limiter.slot("t", 1, None):
        pass
    with pytest.raises(AmperityUnavailable):
        async with limiter.slot("t", 1, time.now + 0.1):
            pass

    waits: list[float] = []

    async def later() -> None:
        async with limiter.slot("t", 1, None) as waited:
            waits.append(waited)

    await time.run([later()])
    assert waits == [1.0]


async def test_keys_are_limited_independently() -> None:
    """Two tenants each get their own limit."""
    time = VirtualTime()
    limiter = MemoryRateLimiter(clock=time.clock, sleep=time.sleep)
    async with limiter.slot("a", 1, None) as first, limiter.slot("b", 1, None) as second:
        assert (first, second) == (0.0, 0.0)


async def assert_freed_a_window_after_it_ended(
    limiter: MemoryRateLimiter, time: VirtualTime
) -> None:
    """Key ``t``'s one slot, its attempt just ended, is busy for a window, then free."""
    with pytest.raises(AmperityUnavailable) as caught:
        async with limiter.slot("t", 1, time.now + 0.5):
            pass
    assert caught.value.retry_after == pytest.approx(1.0)
    await time.advance(1.0)
    async with limiter.slot("t", 1, time.now) as waited:
        assert waited == 0.0


async def test_cancelling_the_holder_releases_its_slot() -> None:
    """A request cancelled in flight ends there: its slot is free again one window later."""
    time = VirtualTime(start=0.0)
    limiter = MemoryRateLimiter(clock=time.clock, sleep=time.sleep)
    started = asyncio.Event()

    async def hang() -> None:
        async with limiter.slot("t", 1, None):
            started.set()
            await asyncio.Event().wait()

    holder = time.spawn(hang())
    await started.wait()
    await time.advance(0.3)
    holder.cancel()
    with pytest.raises(asyncio.CancelledError):
        await holder

    await assert_freed_a_window_after_it_ended(limiter, time)


async def test_an_error_in_the_attempt_releases_its_slot_and_goes_on() -> None:
    """A failed attempt ends at its failure: the error propagates, the slot frees a window on."""
    time = VirtualTime(start=0.0)
    limiter = MemoryRateLimiter(clock=time.clock, sleep=time.sleep)

    async def failing_attempt() -> None:
        async with limiter.slot("t", 1, None):
            await time.advance(0.3)
            raise ConnectionError("reset")

    with pytest.raises(ConnectionError):
        await failing_attempt()

    await assert_freed_a_window_after_it_ended(limiter, time)


async def test_a_cancelled_waiter_leaves_the_queue_to_the_next() -> None:
    """Cancelling the head of the queue hands the turn on: the next waiter still gets a slot."""
    time = VirtualTime(start=0.0)
    limiter = MemoryRateLimiter(clock=time.clock, sleep=time.sleep)
    granted: list[str] = []

    async def wait_for_slot(name: str) -> None:
        async with limiter.slot("t", 1, None):
            granted.append(name)

    async with limiter.slot("t", 1, None):
        pass
    first = time.spawn(wait_for_slot("first"))
    second = time.spawn(wait_for_slot("second"))
    await time.settle()
    first.cancel()
    await time.advance(1.0)

    assert first.cancelled()
    assert second.done()
    assert granted == ["second"]


async def test_a_queued_waiter_gives_up_at_its_deadline() -> None:
    """A waiter queued behind another is refused at its deadline, not after the queue moves."""
    time = VirtualTime(start=0.0)
    limiter = MemoryRateLimiter(clock=time.clock, sleep=time.sleep)
    refused_at: list[float] = []

    async def head() -> None:
        async with limiter.slot("t", 1, None):
            await time.sleep(5.0)

    async def patient() -> None:
        async with limiter.slot("t", 1, None):
            pass

    async def hurried() -> None:
        await time.sleep(0.2)
        with pytest.raises(AmperityUnavailable) as caught:
            async with limiter.slot("t", 1, 3.0):
                pass
        assert caught.value.reason == "RATE_LIMITED_LOCALLY"
        refused_at.append(time.now)

    await time.run([head(), patient(), hurried()])

    assert refused_at == [pytest.approx(3.0)]


def test_busiest_window_counts_half_open_windows() -> None:
    """The test helper itself: events one second apart are in different windows."""
    assert busiest_window([0.0, 0.5, 1.0]) == 2
    assert busiest_window([0.0, 0.0, 0.999]) == 3
    assert busiest_window([0.0, 1.0, 1.999, 2.0], length=2.0) == 3


async def test_each_of_n_worker_processes_is_granted_its_share_of_the_limit() -> None:
    """With 4 worker processes and limit 500, one process grants 125 a second, so all 4 <= 500."""
    time = VirtualTime()
    limiter = MemoryRateLimiter(clock=time.clock, sleep=time.sleep, processes=4)
    waits: list[float] = []

    async def one() -> None:
        async with limiter.slot("t", 500, None) as waited:
            waits.append(waited)

    await time.run([one() for _ in range(300)])

    assert sorted(waits) == [0.0] * 125 + [1.0] * 125 + [2.0] * 50


async def test_the_service_limiter_keeps_the_share_of_the_workers_started() -> None:
    """`serve --workers 3` over a config saying 1: each worker grants a third of limit 3."""
    settings = with_workers(Settings(), 3)
    limiter = build_rate_limiter(settings.cache, processes=settings.server.workers)

    async with limiter.slot("t", 3, None) as waited:
        assert waited == 0.0
        with pytest.raises(AmperityUnavailable) as caught:
            async with limiter.slot("t", 3, time.monotonic() + 0.5):
                pass

    assert settings.server.workers == 3
    assert caught.value.reason == "RATE_LIMITED_LOCALLY"


async def arrivals_of_workers(limit: int, workers: int, per_worker: int) -> list[float]:
    """Arrival times of ``per_worker`` requests queued at once in each of ``workers`` limiters.

    Each worker process has a limiter of its own (``processes=workers``) on one clock; each
    request arrives at Amperity some time after its grant and is answered after that.
    """
    time = VirtualTime()
    rng = random.Random(limit * 100 + workers)
    arrivals: list[float] = []

    async def one(limiter: MemoryRateLimiter) -> None:
        async with limiter.slot(KEY, limit, None):
            await time.sleep(rng.uniform(0.0, 0.3))  # the request travels to Amperity
            arrivals.append(time.now)
            await time.sleep(rng.uniform(0.0, 0.1))  # and its answer travels back

    limiters = [
        MemoryRateLimiter(clock=time.clock, sleep=time.sleep, processes=workers)
        for _ in range(workers)
    ]
    await time.run([one(limiter) for limiter in limiters for _ in range(per_worker)])
    assert len(arrivals) == workers * per_worker
    return arrivals


async def test_fewer_requests_a_second_than_workers_keep_the_limit_over_each_window() -> None:
    """Limit 2/s over 4 workers: any 2 s of arrivals hold at most 4, not one a second each."""
    arrivals = await arrivals_of_workers(limit=2, workers=4, per_worker=10)

    assert busiest_window(arrivals, length=2.0) == 4  # 2/s kept, and reached
    assert busiest_window(arrivals, length=10.0) <= 2 * 10 + 4  # sustained: 2/s, not 4/s


@pytest.mark.parametrize(
    ("limit", "workers"), [(1, 3), (2, 4), (3, 4), (5, 4), (7, 3), (4, 4), (2, 1)]
)
async def test_workers_shares_together_never_exceed_the_limit(limit: int, workers: int) -> None:
    """N workers' own limiters: every window of max(1, N / limit) s holds <= limit a second."""
    window = max(1.0, workers / limit)
    arrivals = await arrivals_of_workers(limit, workers, per_worker=8)

    assert busiest_window(arrivals, length=window) <= limit * window + 1e-9
    assert busiest_window(arrivals) <= max(limit, workers)


def test_a_share_says_what_each_worker_may_send() -> None:
    """The shares in words, as the Redis outage warning and check-config give them."""
    assert process_share(500, 4) == Share(125, 1.0)
    assert process_share(2, 4) == Share(1, 2.0)
    assert process_share(500, 4).describe() == "125 requests/s"
    assert process_share(1, 1).describe() == "1 request/s"
    assert process_share(2, 4).describe() == "1 request every 2 s"
    assert process_share(3, 4).describe() == "1 request every 1.33 s"


async def test_the_service_redis_limiter_falls_back_to_the_workers_share() -> None:
    """Redis backend, Redis down, 4 workers at 2/s: a worker's next slot is 2 s away, not 1."""
    with socket.socket() as probe:  # a port nothing listens on: Redis is down
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cache = CacheSettings(backend="redis", redis_url=f"redis://127.0.0.1:{port}/0")
    limiter = build_rate_limiter(cache, processes=4)

    async with limiter.slot("t", 2, None) as waited:
        assert waited == 0.0
    with pytest.raises(AmperityUnavailable) as caught:
        async with limiter.slot("t", 2, time.monotonic() + 1.5):
            pass

    # The worker's share is 1 request every 2 s; a whole one a second would wait at most 1 s.
    # (A real clock: the margin leaves a loaded machine up to a second between the slots.)
    assert caught.value.retry_after > 1.0
