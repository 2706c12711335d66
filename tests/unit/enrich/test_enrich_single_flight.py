"""Single flight: shared calls, cancellation of one caller, and clean-up."""

from __future__ import annotations

import asyncio

import pytest

from amperity_signal.enrich.single_flight import SingleFlight


async def test_a_cancelled_caller_does_not_cancel_the_shared_call() -> None:
    """The call runs in its own task: the others still get its result."""
    joins: list[object] = []
    flights: SingleFlight[str] = SingleFlight(on_join=joins.append)
    gate = asyncio.Event()
    runs = 0

    async def call() -> str:
        nonlocal runs
        runs += 1
        await gate.wait()
        return "done"

    leader = asyncio.create_task(flights.run("k", call))
    follower = asyncio.create_task(flights.run("k", call))
    await asyncio.sleep(0)  # let both tasks reach the flight (a yield, not a wait)
    leader.cancel()
    gate.set()
    assert await follower == "done"
    with pytest.raises(asyncio.CancelledError):
        await leader
    assert runs == 1
    assert joins == ["k"]
    assert flights.in_flight() == 0


async def test_a_finished_flight_is_not_reused() -> None:
    """Once a call finished, the next caller starts a new one."""
    flights: SingleFlight[int] = SingleFlight()
    counter = iter(range(10))

    async def call() -> int:
        return next(counter)

    assert await flights.run("k", call) == 0
    assert await flights.run("k", call) == 1
