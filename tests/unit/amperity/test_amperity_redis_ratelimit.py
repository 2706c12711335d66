"""The Redis limiter against a real redis-server: replicas share one limit."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import shutil
import socket
import subprocess
import time
from bisect import bisect_left
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import pytest
from redis.asyncio import Redis

from amperity_signal.amperity import RedisRateLimiter
from amperity_signal.errors import AmperityUnavailable
from tests.support import in_ci

from .faketime import FakeTime

# Arrivals are timed by the local clock, grants and ends by Redis's: the two can differ in
# rate by a hair and Redis keeps microseconds, so windows are checked this much shorter.
TIMING_SLACK = 0.005
KEY = "acme@https://acme.amperity.com"
# How long the limiters here wait for redis-server. The service's 1 s is plenty for a local
# Redis, but on a loaded 2-core machine 160 slots in flight can wait longer for the CPU: a
# limiter then takes Redis for down and counts its slots locally, which these tests would
# read as the shared limit failing. Only the unreachable-Redis test needs a timeout to trip.
ANSWER_SECONDS = 10.0


def shared_limiter(client: Redis, **changes: Any) -> RedisRateLimiter:
    """A Redis limiter on ``client`` that waits ``ANSWER_SECONDS`` for Redis."""
    return RedisRateLimiter(client, redis_timeout=ANSWER_SECONDS, **changes)


class RedisTime(FakeTime):
    """A limiter clock and sleep under which Redis's clock seems to move on as well.

    The limiter's slots are timed by Redis's TIME, which a test cannot set. Sleeping here
    moves the fake clock on and every score in ``key`` back by as much, which to the limiter
    is Redis's clock moving on: no test waits for real, or measures how long anything took.
    """

    def __init__(self, client: Redis, key: str) -> None:
        super().__init__()
        self._client = client
        self._key = key

    async def sleep(self, seconds: float) -> None:
        await super().sleep(seconds)
        shift_us = round(seconds * 1_000_000)
        members: list[Any] = await self._client.zrange(self._key, 0, -1, withscores=True)
        if members:
            await self._client.zadd(
                self._key, {member: score - shift_us for member, score in members}, xx=True
            )

    @property
    def slept_us(self) -> int:
        """All the sleeps so far, in microseconds."""
        return round(sum(self.sleeps) * 1_000_000)

    @staticmethod
    def one_window_after(end_us: float, before_us: int, after_us: int) -> tuple[float, float]:
        """How long a slot ending at ``end_us`` can be slept for: (least, most), in µs.

        The slot was taken between ``before_us`` and ``after_us`` (Redis's real TIME): by
        then the sleeps must have moved Redis's clock to ``end_us`` + 1 s, and the limiter
        asks for no more than that from its first look on. A machine stalled past the end
        only shortens the sleeps, so this holds however long any step took.
        """
        window_us = 1_000_000
        return max(0, end_us + window_us - after_us), max(0, end_us + window_us - before_us)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A throwaway redis-server on a free port (skipped locally when it is not installed)."""
    binary = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )
    if binary is None:
        if in_ci():
            pytest.fail("redis-server is required in CI but is not installed")
        pytest.skip("redis-server is not installed")
    port = _free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    pytest.fail("redis-server did not start")
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
async def redis_clients(redis_url: str) -> AsyncIterator[tuple[Redis, Redis]]:
    """Two separate connections, as two replicas would have, on a flushed database."""
    first, second = Redis.from_url(redis_url), Redis.from_url(redis_url)
    await first.flushdb()
    yield first, second
    await first.aclose()
    await second.aclose()


async def only_score(client: Redis, key: str) -> float:
    """The score of the one member of the sorted set ``key``."""
    members: list[Any] = await client.zrange(key, 0, -1, withscores=True)
    assert len(members) == 1
    return float(members[0][1])


async def redis_now_us(client: Redis) -> int:
    """The Redis server's TIME in microseconds."""
    seconds, micros = await client.time()
    return int(seconds) * 1_000_000 + int(micros)


def busiest_window(times: Sequence[float], length: float) -> int:
    """The most events in any half-open window [t, t + length)."""
    ordered = sorted(times)
    return max(bisect_left(ordered, start + length) - i for i, start in enumerate(ordered))


async def test_two_replicas_keep_every_second_of_arrivals_within_the_limit(
    redis_clients: tuple[Redis, Redis], caplog: pytest.LogCaptureFixture
) -> None:
    """Two limiters on one Redis, arrivals up to 1 s after the grant: <= 40 per second."""
    limiters = [shared_limiter(client) for client in redis_clients]
    rng = random.Random(5)
    arrivals: list[float] = []
    waits: list[float] = []

    async def one(index: int) -> None:
        async with limiters[index % 2].slot(KEY, 40, None, request_timeout=2.0) as waited:
            waits.append(waited)
            await asyncio.sleep(rng.uniform(0.0, 1.0))  # the request travels to Amperity
            arrivals.append(time.monotonic())
            await asyncio.sleep(rng.uniform(0.0, 0.05))  # and its answer travels back

    await asyncio.gather(*(one(i) for i in range(160)))

    assert len(arrivals) == 160
    assert busiest_window(arrivals, 1.0 - TIMING_SLACK) <= 40
    assert sorted(waits)[:40] == [0.0] * 40
    assert "unreachable" not in caplog.text  # every slot came from Redis, none locally


async def test_redis_limit_refuses_a_slot_after_the_deadline(
    redis_clients: tuple[Redis, Redis],
) -> None:
    """With the shared limit in flight, a deadline before the next slot: RATE_LIMITED_LOCALLY."""
    fake = FakeTime()
    first, second = (
        shared_limiter(client, clock=fake.clock, sleep=fake.sleep) for client in redis_clients
    )
    async with first.slot("t", 2, None), second.slot("t", 2, None):
        with pytest.raises(AmperityUnavailable) as caught:
            async with first.slot("t", 2, fake.now + 0.2):
                pass

    assert caught.value.reason == "RATE_LIMITED_LOCALLY"
    # Both slots are in flight, so each ends no sooner than now: one frees a window later.
    assert caught.value.retry_after == 1.0
    assert fake.sleeps == []  # refused at once, not after waiting for the deadline


async def test_a_slot_is_a_member_scored_by_its_provisional_then_real_end(
    redis_clients: tuple[Redis, Redis],
) -> None:
    """In ``amperity-signal:rl:{key}`` a held slot scores grant + max hold, then its real end."""
    client = redis_clients[0]
    key = f"amperity-signal:rl:{KEY}"
    before_us = await redis_now_us(client)
    async with shared_limiter(client).slot(KEY, 5, None, request_timeout=3.0):
        entered_us = await redis_now_us(client)
        provisional = await only_score(client, key)
        ttl_ms = await client.pttl(key)
        read_us = await redis_now_us(client)
    after_us = await redis_now_us(client)
    ended = await only_score(client, key)

    # Granted (by Redis's clock) between before and entered, for 3 s + 1 s margin; every
    # bound is a Redis TIME reading, so however long a step took, none can be crossed.
    assert before_us + 4_000_000 <= provisional <= entered_us + 4_000_000
    # The key expires a window and a second after the hold (PEXPIRE in ms: 1 ms of rounding).
    expires_us = provisional + 2_000_000
    assert expires_us - read_us <= ttl_ms * 1_000 + 1_000 and ttl_ms <= 6_000
    assert read_us <= ended <= after_us  # released when the block ended


async def test_a_released_slot_frees_shared_capacity_one_window_after_completion(
    redis_clients: tuple[Redis, Redis],
) -> None:
    """One replica's slot, held 0.3 s, is the other's again a second after it ended."""
    first = shared_limiter(redis_clients[0])
    async with first.slot("t", 1, None):
        await asyncio.sleep(0.3)  # so its end is not its grant
    ended_us = await only_score(redis_clients[0], "amperity-signal:rl:t")
    redis_time = RedisTime(redis_clients[1], "amperity-signal:rl:t")
    second = shared_limiter(redis_clients[1], clock=redis_time.clock, sleep=redis_time.sleep)

    before_us = await redis_now_us(redis_clients[1])
    async with second.slot("t", 1, None) as waited:
        after_us = await redis_now_us(redis_clients[1])

    assert waited == pytest.approx(sum(redis_time.sleeps), abs=1e-9)
    assert len(redis_time.sleeps) <= 1  # one sleep, to the moment the slot frees: no polling
    least, most = redis_time.one_window_after(ended_us, before_us, after_us)
    assert least <= redis_time.slept_us <= most


async def test_cancelling_the_holder_releases_its_slot_in_redis(
    redis_clients: tuple[Redis, Redis],
) -> None:
    """A request cancelled in flight gets its real end time, not the provisional one."""
    client = redis_clients[0]
    holding = asyncio.Event()

    async def hang() -> None:
        async with shared_limiter(client).slot("t", 1, None, request_timeout=30.0):
            holding.set()
            await asyncio.Event().wait()

    holder = asyncio.create_task(hang())
    await holding.wait()
    holder.cancel()
    with pytest.raises(asyncio.CancelledError):
        await holder

    assert await only_score(client, "amperity-signal:rl:t") <= await redis_now_us(client)


async def test_a_crashed_holders_slot_expires_after_the_max_hold(
    redis_clients: tuple[Redis, Redis],
) -> None:
    """A holder that never releases stops counting request_timeout + margin + a window on."""
    crashed = shared_limiter(redis_clients[0], hold_margin=0.1).slot(
        "t", 1, None, request_timeout=0.2
    )
    before_us = await redis_now_us(redis_clients[0])
    await crashed.__aenter__()  # and no release until the other replica has its slot
    entered_us = await redis_now_us(redis_clients[0])
    provisional_us = await only_score(redis_clients[0], "amperity-signal:rl:t")
    redis_time = RedisTime(redis_clients[1], "amperity-signal:rl:t")
    other = shared_limiter(redis_clients[1], clock=redis_time.clock, sleep=redis_time.sleep)

    async with other.slot("t", 1, None) as waited:
        after_us = await redis_now_us(redis_clients[1])
    await crashed.__aexit__(None, None, None)

    # Granted (by Redis's clock) between before and entered, it ends 0.3 s after at the latest.
    assert before_us + 300_000 <= provisional_us <= entered_us + 300_000
    assert waited == pytest.approx(sum(redis_time.sleeps), abs=1e-9)
    # While in flight it frees a window after now at the soonest; once past its end, a
    # window after that end: two sleeps at most, and the slot is the other's no sooner.
    assert len(redis_time.sleeps) <= 2
    least, most = redis_time.one_window_after(provisional_us, entered_us, after_us)
    assert least <= redis_time.slept_us <= most


async def test_unreachable_redis_falls_back_to_a_local_limit_and_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Without Redis, slots still come from a local limit, and the outage is logged only once."""
    client = Redis(host="127.0.0.1", port=_free_port(), socket_connect_timeout=0.5)
    now = [100.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    limiter = RedisRateLimiter(client, clock=lambda: now[0], sleep=sleep, redis_timeout=0.2)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            async with limiter.slot("t", 2, None):
                pass
    await client.aclose()

    assert slept == [1.0]
    warnings = [r for r in caplog.records if "rate limit unavailable" in r.getMessage()]
    assert len(warnings) == 1


async def test_unreachable_redis_falls_back_to_each_workers_share_not_the_full_limit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Redis down under 4 workers, limit 2/s: each worker sends 1 every 2 s, and says so."""
    client = Redis(host="127.0.0.1", port=_free_port(), socket_connect_timeout=0.5)
    time = FakeTime()
    limiter = RedisRateLimiter(
        client, clock=time.clock, sleep=time.sleep, redis_timeout=0.2, processes=4
    )
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            async with limiter.slot("t", 2, None):
                pass
    await client.aclose()

    assert time.sleeps == [2.0, 2.0]  # not 1 a second in each of the 4 workers
    (warning,) = [r.getMessage() for r in caplog.records if "unavailable" in r.getMessage()]
    assert "full limit" not in warning
    assert "1 request every 2 s in each of this replica's 4 worker processes" in warning
    # Not "together at most 2 requests/s": 4 may still arrive in one second.
    assert "(together 2 requests/s over every 2 s, but up to 4 in the same second)" in warning
    assert "other replicas are not counted" in warning
