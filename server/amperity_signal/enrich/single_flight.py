"""Single flight: concurrent callers with the same key share one call and its result.

A shared call runs with the deadline of the caller that started it. ``run_within`` is for
callers with deadlines of their own: when the shared call ran out of time and this caller
has more, it calls again (shared with others in the same case), so each caller gets the
best answer its own deadline allows while concurrent callers still make one call whenever
it had time enough.
"""

from __future__ import annotations

import asyncio
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
    does not cancel the call the others are waiting for.

    Args:
        on_join: Called with the key each time a caller joins a call in flight.
    """

    def __init__(self, on_join: Callable[[Hashable], None] | None = None) -> None:
        self._calls: dict[Hashable, asyncio.Task[T]] = {}
        self._on_join = on_join

    def in_flight(self) -> int:
        """How many calls are running now."""
        return len(self._calls)

    async def run(self, key: Hashable, call: Callable[[], Awaitable[T]]) -> T:
        """The result of ``call()``, shared with every caller using the same key meanwhile."""
        task = self._calls.get(key)
        if task is not None:
            if self._on_join is not None:
                self._on_join(key)
        else:

            async def flight() -> T:
                try:
                    return await call()
                finally:
                    self._calls.pop(key, None)

            task = asyncio.get_running_loop().create_task(flight())
            self._calls[key] = task
        return await asyncio.shield(task)

    async def run_within(
        self,
        key: Hashable,
        call: Callable[[], Awaitable[T]],
        *,
        deadline: float | None,
        ran_out_at: Callable[[T], float | None],
    ) -> T:
        """``run``, again while the shared call ran out of time before ``deadline``.

        Args:
            key: The call's key.
            call: Makes the call with this caller's deadline.
            deadline: This caller's deadline (None: no limit).
            ran_out_at: The deadline a result's call ran out of time against, or None.
        """
        result = await self.run(key, call)
        for _ in range(MAX_EXTRA_CALLS):
            limit = ran_out_at(result)
            if limit is None or (deadline is not None and deadline <= limit):
                break
            result = await self.run(key, call)
        return result
