"""The Redis limiter against a real redis-server: replicas share one limit."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import subprocess
import time
from bisect import bisect_left
from collections.abc import AsyncIterator, Iterator, Sequence

import pytest
from redis.asyncio import Redis

from amperity_signal.amperity import RedisRateLimiter
from amperity_signal.errors import AmperityUnavailable

# Grants are timed by the local clock when acquire returns; a reply or wake-up delayed by a
# busy event loop shifts one by up to tens of milliseconds, so windows are checked this much
# shorter than a second. Two replicas each allowing the full limit would still show ~2x.
TIMING_SLACK = 0.1


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
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is required under CI=true but is not installed")
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


def busiest_window(grants: Sequence[float], length: float) -> int:
    """The most grants in any half-open window [t, t + length)."""
    ordered = sorted(grants)
    return max(bisect_left(ordered, start + length) - i for i, start in enumerate(ordered))


async def test_two_replicas_sharing_redis_never_exceed_the_limit_together(
    redis_clients: tuple[Redis, Redis], caplog: pytest.LogCaptureFixture
) -> None:
    """Two limiters on one Redis, 150 concurrent acquires at limit 50: <= 50 per second."""
    limiters = [RedisRateLimiter(client) for client in redis_clients]
    grants: list[float] = []
    waits: list[float] = []

    async def one(index: int) -> None:
        waits.append(await limiters[index % 2].acquire("acme@https://acme.amperity.com", 50, None))
        grants.append(time.monotonic())

    started = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(150)))

    assert busiest_window(grants, 1.0 - TIMING_SLACK) <= 50
    assert sorted(waits)[:50] == [0.0] * 50
    assert sum(1 for wait in waits if wait > 0.9) >= 50
    assert time.monotonic() - started < 4.0
    assert "unreachable" not in caplog.text  # every slot came from Redis, none locally


async def test_redis_limit_refuses_a_slot_after_the_deadline(
    redis_clients: tuple[Redis, Redis],
) -> None:
    """With the shared limit used up, a short deadline raises RATE_LIMITED_LOCALLY."""
    first, second = (RedisRateLimiter(client) for client in redis_clients)
    await first.acquire("t", 2, None)
    await second.acquire("t", 2, None)

    with pytest.raises(AmperityUnavailable) as caught:
        await first.acquire("t", 2, time.monotonic() + 0.2)

    assert caught.value.reason == "RATE_LIMITED_LOCALLY"
    assert 0.5 < caught.value.retry_after <= 1.0


async def test_slots_live_in_a_sorted_set_under_the_documented_key(
    redis_clients: tuple[Redis, Redis],
) -> None:
    """The log is the sorted set ``amperity-signal:rl:{key}`` and it expires."""
    client = redis_clients[0]
    await RedisRateLimiter(client).acquire("acme@https://acme.amperity.com", 5, None)

    key = "amperity-signal:rl:acme@https://acme.amperity.com"
    assert await client.zcard(key) == 1
    assert 0 < await client.pttl(key) <= 3_000


async def test_unreachable_redis_falls_back_to_a_local_limit_and_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Without Redis, acquires still limit locally, and the outage is logged only once."""
    client = Redis(host="127.0.0.1", port=_free_port(), socket_connect_timeout=0.5)
    now = [100.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    limiter = RedisRateLimiter(client, clock=lambda: now[0], sleep=sleep, redis_timeout=0.2)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            await limiter.acquire("t", 2, None)
    await client.aclose()

    assert slept == [1.0]
    warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == 1
