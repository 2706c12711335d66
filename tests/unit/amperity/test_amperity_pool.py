"""The sharded pool: in-flight work spreads over shards and never piles onto one client."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx

from amperity_signal.amperity import AmperityClient

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
