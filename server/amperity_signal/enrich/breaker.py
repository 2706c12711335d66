"""A per-integration circuit breaker for Profile API calls.

After ``failures`` consecutive 5xx/timeouts (``AmperityUnavailable``) the breaker opens and
refuses calls for ``cooldown`` seconds. Then it is half-open: one trial call is let through
while the others are still refused, so a recovering Amperity meets one request rather than
every visitor's at once; the trial's failure reopens the breaker, its success closes it. A
trial that reports neither (cancelled, or refused for another reason) frees its place after
another ``cooldown``. 403s and 404s are answers, not outages, and do not count; nor does a
call that was never sent (``is_outage``).

The ``breaker_open`` gauge is 1 from the opening until the breaker closes: past the
cooldown it stays 1 until a trial call gets an answer (with no traffic, until the next
call), since until then nothing says Amperity answers again. The opening is logged by the
caller (``messages.log_breaker_opened``), with the failure that opened it; the closing here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from amperity_signal.errors import AmperityError, AmperityUnavailable
from amperity_signal.metrics import Metrics

log = logging.getLogger("amperity_signal.enrich")


def is_outage(exc: AmperityError) -> bool:
    """Whether a failed call is evidence that Amperity is unavailable (5xx, timeouts, 429).

    An ``AmperityUnavailable`` made after no attempt at all (``attempts == 0``: the
    caller's deadline passed before a request could be sent, or the local per-tenant rate
    limit had no slot in time) says nothing about Amperity: it neither counts towards the
    breaker nor is remembered as a failed lookup for the next caller, whose deadline may
    be fine.
    """
    return isinstance(exc, AmperityUnavailable) and exc.attempts > 0


def nothing_sent(exc: AmperityError) -> bool:
    """Whether the call failed before any request reached Amperity (see ``is_outage``)."""
    return isinstance(exc, AmperityUnavailable) and exc.attempts == 0


def ran_out_of_time(
    exc: AmperityError, deadline: float | None, *, max_retries: int, now: float
) -> bool:
    """Whether the call's deadline, not Amperity, ended a failed call.

    Nothing was sent, or retries were left but the next one (``retry_after`` away) would
    have come after the deadline; an attempt whose timeout the deadline shortened fails at
    the deadline, so it counts too. Such a failure is not remembered for the next caller,
    whose deadline may be fine (it still counts towards the breaker when a request was sent).
    """
    if deadline is None or not isinstance(exc, AmperityUnavailable):
        return False
    if exc.attempts == 0:
        return True
    return exc.attempts <= max_retries and now + exc.retry_after >= deadline


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
        self._integration_id = integration_id
        self._gauge = metrics.breaker_open.labels(integration=integration_id)
        self._threshold = failures
        self._cooldown = cooldown
        self._clock = clock
        self._consecutive = 0
        self._open_until: float | None = None
        # Half-open: until when the one trial call holds its place.
        self._trial_until: float | None = None
        self._gauge.set(0)

    def allow(self) -> bool:
        """Whether a partner call may be made now (half-open: only the one trial call)."""
        if self._open_until is None:
            return True
        now = self._clock()
        if now < self._open_until:
            return False
        if self._trial_until is not None and now < self._trial_until:
            return False  # another call is the trial
        self._trial_until = now + self._cooldown
        return True

    def retry_in(self) -> float:
        """Seconds until calls may be allowed again (0 when closed)."""
        if self._open_until is None:
            return 0.0
        until = max(self._open_until, self._trial_until or 0.0)
        return max(0.0, until - self._clock())

    def record_success(self) -> None:
        """A call got an answer (including a 404): close the breaker, and say so once."""
        self._consecutive = 0
        self._trial_until = None
        if self._open_until is not None:
            self._open_until = None
            self._gauge.set(0)
            log.info(
                f"partner calls resume for {self._integration_id}: the Profile API answered "
                "a trial call, the breaker is closed",
                extra={"integration_id": self._integration_id},
            )

    def record_failure(self) -> bool:
        """A call failed with a 5xx or timeout; returns True when this opened the breaker."""
        self._consecutive += 1
        if self._consecutive < self._threshold:
            return False
        was_open = self._open_until is not None and self._clock() < self._open_until
        self._open_until = self._clock() + self._cooldown
        self._trial_until = None
        self._gauge.set(1)
        return not was_open
