"""The in-memory per-tenant limiter: no sliding one-second window ever over the limit."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Sequence

import pytest

from amperity_signal.amperity import MemoryRateLimiter
from amperity_signal.errors import AmperityUnavailable


class VirtualTime:
    """A virtual clock for many concurrent sleepers: time jumps to the next wake-up."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (self.now + seconds, next(self._order), future))
        await future

    async def run(self, work: Sequence[Awaitable[None]]) -> None:
        """Run ``work`` concurrently, waking sleepers in time order until all is done."""
        tasks = [asyncio.ensure_future(item) for item in work]
        while True:
            for _ in range(3):
                await asyncio.sleep(0)
            if all(task.done() for task in tasks):
                break
            when, _, future = heapq.heappop(self._timers)
            self.now = max(self.now, when)
            future.set_result(None)
        for task in tasks:
            task.result()


def busiest_window(grants: Sequence[float]) -> int:
    """The most grants in any half-open one-second window [t, t + 1).

    The maximum over all windows is reached by a window starting at a grant, so checking
    the window that starts at every grant checks them all.
    """
    ordered = sorted(grants)
    return max(bisect_left(ordered, start + 1.0) - index for index, start in enumerate(ordered))


async def test_1200_acquires_never_put_more_than_500_in_any_sliding_second() -> None:
    """1,200 staggered and bursty acquires at limit 500: every one-second window <= 500."""
    time = VirtualTime()
    limiter = MemoryRateLimiter(clock=time.clock, sleep=time.sleep)
    rng = random.Random(11)
    grants: list[float] = []
    waits: list[float] = []

    async def one(arrival: float) -> None:
        await time.sleep(arrival)
        waits.append(await limiter.acquire("acme@https://acme.amperity.com", 500, None))
        grants.append(time.clock())

    # Bursts at a few instants plus a steady trickle, so fixed windows would overshoot.
    arrivals = [0.0] * 300 + [0.9] * 300 + [rng.uniform(0, 3) for _ in range(600)]
    await time.run([one(arrival) for arrival in arrivals])

    assert len(grants) == 1_200
    assert busiest_window(grants) <= 500
    assert busiest_window(grants) == 500  # and the limit is used, not underused
    assert sum(1 for wait in waits if wait > 0) > 0
    assert all(wait >= 0 for wait in waits)


async def test_a_burst_of_1200_is_spread_over_three_seconds() -> None:
    """1,200 at once with limit 500: 500 now, 500 one second later, 200 after two."""
    time = VirtualTime()
    limiter = MemoryRateLimiter(clock=time.clock, sleep=time.sleep)
    waits: list[float] = []

    async def one() -> None:
        waits.append(await limiter.acquire("t", 500, None))

    await time.run([one() for _ in range(1_200)])

    assert sorted(waits) == [0.0] * 500 + [1.0] * 500 + [2.0] * 200


async def test_no_slot_before_the_deadline_raises_rate_limited_locally() -> None:
    """When the next slot comes after the deadline: RATE_LIMITED_LOCALLY with retry_after."""
    time = VirtualTime()
    limiter = MemoryRateLimiter(clock=time.clock, sleep=time.sleep)
    assert await limiter.acquire("t", 2, None) == 0.0
    assert await limiter.acquire("t", 2, None) == 0.0

    with pytest.raises(AmperityUnavailable) as caught:
        await limiter.acquire("t", 2, time.now + 0.5)

    assert caught.value.reason == "RATE_LIMITED_LOCALLY"
    assert caught.value.retry_after == pytest.approx(1.0)
    assert "rate_limit_per_second" in caught.value.message


async def test_a_refused_acquire_takes_no_slot() -> None:
    """A deadline refusal reserves nothing: the next caller gets the earliest slot."""
    time = VirtualTime()
    limiter = MemoryRateLimiter(clock=time.clock, sleep=time.sleep)
    await limiter.acquire("t", 1, None)
    with pytest.raises(AmperityUnavailable):
        await limiter.acquire("t", 1, time.now + 0.1)

    waited: list[float] = []

    async def later() -> None:
        waited.append(await limiter.acquire("t", 1, None))

    await time.run([later()])
    assert waited == [1.0]


async def test_keys_are_limited_independently() -> None:
    """Two tenants each get their own limit."""
    time = VirtualTime()
    limiter = MemoryRateLimiter(clock=time.clock, sleep=time.sleep)
    assert await limiter.acquire("a", 1, None) == 0.0
    assert await limiter.acquire("b", 1, None) == 0.0


async def test_a_cancelled_waiter_gives_its_slot_back() -> None:
    """Cancelling a waiting acquire frees its reserved slot for the next caller."""
    clock_now = [0.0]
    limiter = MemoryRateLimiter(clock=lambda: clock_now[0])
    await limiter.acquire("t", 1, None)
    waiter = asyncio.create_task(limiter.acquire("t", 1, None))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter

    clock_now[0] = 1.0
    assert await limiter.acquire("t", 1, None) == 0.0


def test_busiest_window_counts_half_open_windows() -> None:
    """The test helper itself: grants one second apart are in different windows."""
    assert busiest_window([0.0, 0.5, 1.0]) == 2
    assert busiest_window([0.0, 0.0, 0.999]) == 3


Sleeper = Callable[[float], Awaitable[None]]
