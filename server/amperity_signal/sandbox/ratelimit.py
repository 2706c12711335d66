"""Per-tenant rate limiting over any sliding one-second window."""

from __future__ import annotations

import bisect


class SlidingWindowLimiter:
    """Admits at most ``limit`` requests per key in any window of ``window`` seconds.

    The arrival times of the admitted requests of the last window are kept per key, sorted;
    a request is refused when ``limit`` of them fall within the ``window`` seconds before
    it. Refused requests are not recorded, so a throttled client regains capacity as the
    window slides.

    Requests are admitted in the order they are processed, which under load is not always
    the order they arrived in (one body is read sooner than another's). Times are therefore
    inserted in order and counted up to the request's own arrival: kept in processing order,
    an early arrival admitted late stayed behind later ones at the head of the window and
    was never dropped, and the sandbox refused requests Amperity would have taken.
    """

    def __init__(self, limit: int, window: float = 1.0) -> None:
        if limit < 1:
            raise ValueError("rate limit must be at least 1 request per window")
        self._limit = limit
        self._window = window
        self._admitted: dict[str, list[float]] = {}

    @property
    def limit(self) -> int:
        """Requests admitted per window and key."""
        return self._limit

    def admit(self, key: str, now: float) -> bool:
        """Records and admits a request that arrived at ``now``, or refuses it (records nothing)."""
        times = self._admitted.setdefault(key, [])
        # Kept for two windows behind the newest arrival, so that a request processed up to a
        # window late still finds every admitted arrival of its own window.
        newest = max(times[-1], now) if times else now
        expired = bisect.bisect_right(times, newest - 2 * self._window)
        if expired:
            del times[:expired]
        start = bisect.bisect_right(times, now - self._window)
        if bisect.bisect_right(times, now) - start >= self._limit:
            return False
        bisect.insort(times, now)
        return True

    def reset(self) -> None:
        """Forgets every admitted request."""
        self._admitted.clear()
