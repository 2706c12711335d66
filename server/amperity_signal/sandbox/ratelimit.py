"""Per-tenant rate limiting over any sliding one-second window."""

from __future__ import annotations

from collections import deque


class SlidingWindowLimiter:
    """Admits at most ``limit`` requests per key in any window of ``window`` seconds.

    The times of the admitted requests of the last window are kept per key; a request is
    refused when ``limit`` of them fall within the ``window`` seconds before it. Refused
    requests are not recorded, so a throttled client regains capacity as the window slides.
    """

    def __init__(self, limit: int, window: float = 1.0) -> None:
        if limit < 1:
            raise ValueError("rate limit must be at least 1 request per window")
        self._limit = limit
        self._window = window
        self._admitted: dict[str, deque[float]] = {}

    @property
    def limit(self) -> int:
        """Requests admitted per window and key."""
        return self._limit

    def admit(self, key: str, now: float) -> bool:
        """Records and admits a request at ``now``, or refuses it (and records nothing)."""
        times = self._admitted.setdefault(key, deque())
        while times and times[0] <= now - self._window:
            times.popleft()
        if len(times) >= self._limit:
            return False
        times.append(now)
        return True

    def reset(self) -> None:
        """Forgets every admitted request."""
        self._admitted.clear()
