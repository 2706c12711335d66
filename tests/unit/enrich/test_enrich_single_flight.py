"""Single flight: shared calls, cancellation of one caller, and clean-up."""

from __future__ import annotations

import asyncio

import pytest

from amperity_signal.enrich.single_flight import MAX_EXTRA_CALLS, SingleFlight


class GatedCall:
    """A call that counts its runs and answers "done" once ``gate`` is set."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.runs = 0

    async def __call__(self) -> str:
        self.runs += 1
        await self.gate.wait()
        return "done"


async def test_a_cancelled_caller_does_not_cancel_the_shared_call() -> None:
    """The call runs in its own task: the others still get its result."""
    joins: list[object] = []
    flights: SingleFlight[str] = SingleFlight(on_join=joins.append)
    call = GatedCall()
    leader = asyncio.create_task(flights.run("k", call))
    follower = asyncio.create_task(flights.run("k", call))
    await asyncio.sleep(0)  # let both tasks reach the flight (a yield, not a wait)
    leader.cancel()
    call.gate.set()
    assert await follower == "done"
    with pytest.raises(asyncio.CancelledError):
        await leader
    assert call.runs == 1
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

    found = await flights.run_within(
        "k", call, deadline=9.0, ran_out_at=ran_out_at, late=lambda: -1.0
    )
    assert found is None


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

    def late() -> float:
        return -1.0

    assert (
        await flights.run_within("k", call, deadline=5.0, ran_out_at=ran_out_at, late=late) == 5.0
    )
    assert runs == 1
    assert (
        await flights.run_within("k", call, deadline=None, ran_out_at=ran_out_at, late=late) == 5.0
    )
    assert runs == 1 + 1 + MAX_EXTRA_CALLS  # bounded even without a deadline


async def test_a_joiner_stops_waiting_at_its_own_deadline() -> None:
    """run_within: a joiner whose deadline comes first gets ``late()``; the call goes on."""
    now = 100.0
    flights: SingleFlight[str] = SingleFlight(clock=lambda: now)
    call = GatedCall()

    def within(deadline: float | None) -> asyncio.Task[str]:
        coroutine = flights.run_within(
            "k", call, deadline=deadline, ran_out_at=lambda _r: None, late=lambda: "late"
        )
        return asyncio.create_task(coroutine)

    leader, other = within(None), within(None)
    await asyncio.sleep(0)  # the leader's call is in flight
    joiner = within(now)  # its deadline is now: it does not wait for the leader's
    done, _ = await asyncio.wait({joiner}, timeout=5)
    assert done == {joiner}  # before: it waited until the gate opened
    assert joiner.result() == "late"
    assert not leader.done()
    call.gate.set()
    assert (await leader, await other) == ("done", "done")
    assert call.runs == 1
