"""A per-integration circuit breaker for Profile API calls.

After ``failures`` consecutive 5xx/timeouts (``AmperityUnavailable``) the breaker opens and
refuses calls for ``cooldown`` seconds; then calls are let through again, and the next
failure reopens it at once while a success closes it. 403s and 404s are answers, not
outages, and do not count.
"""

from __future__ import annotations

from collections.abc import Callable

from amperity_signal.metrics import Metrics


class Breaker:
    """Consecutive-failure breaker for one integration.

    Args:
        integration_id: The metrics label.
        failures: Consecutive failures that open the breaker (``breaker_failures``).
        cooldown: Seconds it stays open (``breaker_cooldown``).
        clock: Monotonic seconds.
        metrics: ``breaker_open{integration}`` is 1 while open.
    """

    def __init__(
        self,
        integration_id: str,
        *,
        failures: int,
        cooldown: float,
        clock: Callable[[], float],
        metrics: Metrics,
    ) -> None:
        self._gauge = metrics.breaker_open.labels(integration=integration_id)
        self._threshold = failures
        self._cooldown = cooldown
        self._clock = clock
        self._consecutive = 0
        self._open_until: float | None = None
        self._gauge.set(0)

    def allow(self) -> bool:
        """Whether a partner call may be made now."""
        if self._open_until is None:
            return True
        if self._clock() >= self._open_until:
            self._gauge.set(0)
            return True
        return False

    def retry_in(self) -> float:
        """Seconds until calls are allowed again (0 when closed)."""
        if self._open_until is None:
            return 0.0
        return max(0.0, self._open_until - self._clock())

    def record_success(self) -> None:
        """A call got an answer (including a 404): close the breaker."""
        self._consecutive = 0
        if self._open_until is not None:
            self._open_until = None
            self._gauge.set(0)

    def record_failure(self) -> bool:
        """A call failed with a 5xx or timeout; returns True when this opened the breaker."""
        self._consecutive += 1
        if self._consecutive < self._threshold:
            return False
        was_open = self._open_until is not None and self._clock() < self._open_until
        self._open_until = self._clock() + self._cooldown
        self._gauge.set(1)
        return not was_open
