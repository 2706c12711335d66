"""The calls the service's handlers are running, counted for a stop to wait on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection

FAREWELL_SECONDS = 1.0
"""How long a watch has, at a stop, to take its last messages before it is cancelled."""


class CallsInFlight:
    """How many calls are in a handler now, how many of them watches, and a way to wait.

    Every method's observed wrapper (``interceptors``) counts its calls in and out, those
    of the server and of the in-process channel alike. A watch (a call of one of
    ``watch_methods``: a health watch, a Live Events watch) carries no work: at a stop,
    ``Service.stop`` cancels the watches whose callers stopped reading once they are all
    that is left.

    Args:
        watch_methods: Full method names (``/package.Service/Method``) of the watches.
    """

    def __init__(self, watch_methods: Collection[str] = ()) -> None:
        self.count = 0
        self.watches = 0
        self._watch_methods = frozenset(watch_methods)
        self._ended: asyncio.Event | None = None

    def begin(self, method: str) -> None:
        """A handler of ``method`` started."""
        self.count += 1
        if method in self._watch_methods:
            self.watches += 1

    def end(self, method: str) -> None:
        """A handler of ``method`` finished."""
        self.count -= 1
        if method in self._watch_methods:
            self.watches -= 1
        if self._ended is not None:
            self._ended.set()

    def only_watches(self) -> bool:
        """Whether every call in a handler is a watch (or none is left)."""
        return self.count <= self.watches

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Return once ``condition()`` holds; it is checked again as each call ends."""
        while not condition():
            self._ended = asyncio.Event()
            try:
                await self._ended.wait()
            finally:
                self._ended = None
