"""The calls the service's handlers are running, counted for a stop to wait on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class CallsInFlight:
    """How many calls are in a handler now, and a way to wait for that to change.

    Every method's observed wrapper (``interceptors``) counts its calls in and out, those
    of the server and of the in-process channel alike. ``Service.stop`` waits on it to
    cancel the health watches that callers stopped reading once they are all that is left.
    """

    def __init__(self) -> None:
        self.count = 0
        self._ended: asyncio.Event | None = None

    def begin(self) -> None:
        """A handler started."""
        self.count += 1

    def end(self) -> None:
        """A handler finished."""
        self.count -= 1
        if self._ended is not None:
            self._ended.set()

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Return once ``condition()`` holds; it is checked again as each call ends."""
        while not condition():
            self._ended = asyncio.Event()
            try:
                await self._ended.wait()
            finally:
                self._ended = None
