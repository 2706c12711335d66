"""Single flight: concurrent callers with the same key share one call and its result."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


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
