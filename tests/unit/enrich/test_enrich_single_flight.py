"""Single flight: shared calls, cancellation of one caller, and clean-up."""

from __future__ import annotations

import asyncio

import pytest

from amperity_signal.enrich.single_flight import MAX_EXTRA_CALLS, SingleFlight


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


async def test_a_caller_with_more_time_calls_again_when_the_shared_call_ran_out() -> None:
    """run_within: a result that ran out of time before this caller's deadline is retried."""
    flights: SingleFlight[float | None] = SingleFlight()
    results = iter([5.0, None])  # the first call ran out of time at 5.0, the second did not

    async def call() -> float | None:
        return next(results)

    def ran_out_at(result: float | None) -> float | None:
        return result

    assert await flights.run_within("k", call, deadline=9.0, ran_out_at=ran_out_at) is None


async def test_a_caller_without_more_time_takes_the_shared_result() -> None:
    """run_within: no second call for a caller whose deadline is not later than the call's."""
    flights: SingleFlight[float] = SingleFlight()
    runs = 0

    async def call() -> float:
        nonlocal runs
        runs += 1
        return 5.0

    def ran_out_at(result: float) -> float:
        return result

    assert await flights.run_within("k", call, deadline=5.0, ran_out_at=ran_out_at) == 5.0
    assert runs == 1
    assert await flights.run_within("k", call, deadline=None, ran_out_at=ran_out_at) == 5.0
    assert runs == 1 + 1 + MAX_EXTRA_CALLS  # bounded even without a deadline
