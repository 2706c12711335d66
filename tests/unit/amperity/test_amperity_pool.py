"""The sharded pool: in-flight work spreads over shards and never piles onto one client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
import pytest

from amperity_signal.amperity import AmperityClient
from amperity_signal.amperity.pool import ShardedPool
from amperity_signal.errors import AmperityUnavailable

ClientFactory = Callable[..., AmperityClient]


class Gate:
    """A MockTransport handler that holds every request until released."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.arrival = asyncio.Event()
        self.arrived = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.arrived += 1
        self.arrival.set()
        await self.open.wait()
        return httpx.Response(202)

    async def until_arrived(self, count: int) -> None:
        while self.arrived < count:
            self.arrival.clear()
            await self.arrival.wait()


async def test_concurrent_requests_spread_evenly_over_shards(make_client: ClientFactory) -> None:
    """8 requests in flight over 4 shards put exactly 2 on each."""
    gate = Gate()
    client = make_client(gate, shards=4, max_in_flight_per_shard=4)
    tasks = [asyncio.create_task(client.post_event({"n": n}, deadline=None)) for n in range(8)]
    await gate.until_arrived(8)

    assert client.in_flight_per_shard == [2, 2, 2, 2]
    gate.open.set()
    await asyncio.gather(*tasks)
    assert client.in_flight_per_shard == [0, 0, 0, 0]


async def test_few_requests_each_get_their_own_shard(make_client: ClientFactory) -> None:
    """3 requests over 4 idle shards use 3 different shards."""
    gate = Gate()
    client = make_client(gate, shards=4)
    tasks = [asyncio.create_task(client.post_event({}, deadline=None)) for _ in range(3)]
    await gate.until_arrived(3)

    assert sorted(client.in_flight_per_shard) == [0, 1, 1, 1]
    gate.open.set()
    await asyncio.gather(*tasks)


async def test_requests_beyond_capacity_wait_outside_the_shards(
    make_client: ClientFactory,
) -> None:
    """With 2 shards x 2 in flight, a 5th request waits until a slot frees, then goes."""
    gate = Gate()
    client = make_client(gate, shards=2, max_in_flight_per_shard=2)
    tasks = [asyncio.create_task(client.post_event({}, deadline=None)) for _ in range(5)]
    await gate.until_arrived(4)
    for _ in range(10):
        await asyncio.sleep(0)

    assert gate.arrived == 4
    assert client.in_flight_per_shard == [2, 2]
    gate.open.set()
    results = await asyncio.gather(*tasks)
    assert [result.status_code for result in results] == [202] * 5


async def test_a_deadline_passing_while_every_shard_is_busy_sends_nothing(
    make_client: ClientFactory,
) -> None:
    """The request waiting for a full pool gives up at its deadline, unsent, zero attempts."""
    gate = Gate()
    client = make_client(gate, shards=1, max_in_flight_per_shard=1)
    first = asyncio.create_task(client.post_event({}, deadline=None))
    await gate.until_arrived(1)

    with pytest.raises(AmperityUnavailable) as caught:
        await client.post_event({}, deadline=time.monotonic() + 0.05)

    assert "deadline passed before a request could be sent" in caught.value.message
    assert caught.value.attempts == 0
    assert gate.arrived == 1
    gate.open.set()
    assert (await first).status_code == 202


async def test_a_free_shard_is_lent_even_with_no_time_left_to_wait() -> None:
    """Only a wait is timed: with room in the pool a zero timeout still lends a transport."""
    mock = httpx.MockTransport(Gate())
    pool = ShardedPool(shards=1, max_in_flight_per_shard=1, transport=mock)

    async with pool.transport(0.0) as transport:
        assert transport is mock
        assert pool.in_flight == [1]
        with pytest.raises(TimeoutError):
            async with pool.transport(0.0):
                pass  # unreachable: the only shard is busy
    assert pool.in_flight == [0]
