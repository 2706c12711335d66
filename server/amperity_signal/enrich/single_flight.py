"""Single flight: concurrent callers with the same key share one call and its result.

A shared call runs with the deadline of the caller that started it. ``run_within`` is for
callers with deadlines of their own: when the shared call ran out of time and this caller
has more, it calls again (shared with others in the same case), so each caller gets the
best answer its own deadline allows while concurrent callers still make one call whenever
it had time enough. A caller that joins a call started with a later deadline waits for it
until its own deadline only: a Deliver's enrichment share (2 s at most) is not stretched to
the 30 s of the Enrich or BrowserProfile call it joined, which left its POST no time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Final, Generic, TypeVar

T = TypeVar("T")

MAX_EXTRA_CALLS: Final = 2
"""How often ``run_within`` calls again for one caller whose shared calls ran out of time.

Once is usually enough (the caller starts the next call, with its own deadline); the bound
only matters when newer callers with shorter deadlines keep starting the calls it joins.
"""


class SingleFlight(Generic[T]):
    """Runs at most one call per key at a time; callers arriving meanwhile join it.

    The call runs in its own task, so a caller that is cancelled (its RPC deadline passed)
    or stops waiting (``run_within``) does not cancel the call the others are waiting for.

    Args:
        on_join: Called with the key each time a caller joins a call in flight.
        clock: Monotonic seconds, the clock ``run_within``'s deadlines are expressed in.
    """

    def __init__(
        self,
        on_join: Callable[[Hashable], None] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._calls: dict[Hashable, asyncio.Task[T]] = {}
        self._on_join = on_join
        self._clock = clock

    def in_flight(self) -> int:
        """How many calls are running now."""
        return len(self._calls)

    async def run(self, key: Hashable, call: Callable[[], Awaitable[T]]) -> T:
        """The result of ``call()``, shared with every caller using the same key meanwhile."""
        task, _ = self._flight(key, call)
        return await asyncio.shield(task)

    def _flight(
        self, key: Hashable, call: Callable[[], Awaitable[T]]
    ) -> tuple[asyncio.Task[T], bool]:
        """The call in flight for ``key``, started now unless one is; and whether it was."""
        task = self._calls.get(key)
        if task is not None:
            if self._on_join is not None:
                self._on_join(key)
            return task, True

        async def flight() -> T:
            try:
                return await call()
            finally:
                self._calls.pop(key, None)

        task = asyncio.get_running_loop().create_task(flight())
        self._calls[key] = task
        return task, False

    async def run_within(
        self,
        key: Hashable,
        call: Callable[[], Awaitable[T]],
        *,
        deadline: float | None,
        ran_out_at: Callable[[T], float | None],
        late: Callable[[], T],
    ) -> T:
        """``run``, again while the shared call ran out of time before ``deadline``.

        A caller that joins a call in flight waits for it until ``deadline`` at most, then
        gets ``late()``; the call goes on for the others (and the cache). A caller that
        starts the call needs no such bound: the call runs with its deadline.

        Args:
            key: The call's key.
            call: Makes the call with this caller's deadline.
            deadline: This caller's deadline (None: no limit).
            ran_out_at: The deadline a result's call ran out of time against, or None.
            late: The result for a caller whose deadline passed while it waited.
        """
        result = await self._within(key, call, deadline, late)
        for _ in range(MAX_EXTRA_CALLS):
            limit = ran_out_at(result)
            if limit is None or (deadline is not None and deadline <= limit):
                break
            result = await self._within(key, call, deadline, late)
        return result

    async def _within(
        self,
        key: Hashable,
        call: Callable[[], Awaitable[T]],
        deadline: float | None,
        late: Callable[[], T],
    ) -> T:
        task, joined = self._flight(key, call)
        if not joined or deadline is None:
            return await asyncio.shield(task)
        # ``wait`` never cancels the task: the others, and the cache, still get its answer.
        done, _ = await asyncio.wait((task,), timeout=max(deadline - self._clock(), 0.0))
        return task.result() if done else late()
