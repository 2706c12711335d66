"""When to retry a failed call and how long to wait: pure decisions, no I/O.

Only ``UNAVAILABLE`` and ``RESOURCE_EXHAUSTED`` are retried: the service answers them when
Amperity (or the service itself) could not take the event *yet*, and the event was not
delivered. Every other code means retrying the same request cannot help.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc

if TYPE_CHECKING:
    from amperity_signal_client.errors import AmperitySignalError

RETRYABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff and full jitter.

    The wait before retry ``n`` (1-based) is a uniform draw from
    ``[0, min(max_backoff, initial_backoff * multiplier ** (n - 1))]`` ("full jitter", so a
    crowd of clients does not retry in lockstep), but never less than the server's
    ``RetryInfo.retry_delay`` when it sent one.

    Attributes:
        max_attempts: How many times a call is made at most, the first included.
        initial_backoff: The backoff cap, in seconds, before the first retry.
        max_backoff: The largest backoff cap, in seconds.
        multiplier: How much the cap grows per retry.
        total_timeout: The overall deadline of a call, in seconds from its first attempt:
            no attempt starts and no backoff ends after it, and an attempt's own
            deadline is cut to what is left of it.
        retryable_codes: The status codes worth retrying.
    """

    max_attempts: int = 5
    initial_backoff: float = 0.1
    max_backoff: float = 5.0
    multiplier: float = 2.0
    total_timeout: float = 30.0
    retryable_codes: frozenset[grpc.StatusCode] = field(default=RETRYABLE_CODES)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("RetryPolicy.max_attempts must be 1 or more.")
        if self.initial_backoff < 0 or self.max_backoff < 0:
            raise ValueError("RetryPolicy backoffs must be zero or more seconds.")
        if self.multiplier < 1:
            raise ValueError("RetryPolicy.multiplier must be 1 or more.")
        if self.total_timeout <= 0:
            raise ValueError("RetryPolicy.total_timeout must be more than zero seconds.")

    def is_retryable(self, code: grpc.StatusCode) -> bool:
        """Whether a call that failed with ``code`` may be retried."""
        return code in self.retryable_codes

    def is_retryable_number(self, code: int) -> bool:
        """Whether a ``google.rpc.Code`` number (a DeliveryError's code) may be retried."""
        return any(code == status.value[0] for status in self.retryable_codes)

    def backoff(
        self, retry: int, minimum: float | None = None, rng: random.Random | None = None
    ) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first retry).

        Args:
            retry: Which retry this is, starting at 1.
            minimum: The server's RetryInfo delay, the least wait when given.
            rng: The random source (a seeded one in tests).
        """
        cap = min(self.max_backoff, self.initial_backoff * self.multiplier ** max(retry - 1, 0))
        draw = rng.uniform if rng is not None else random.uniform
        jittered = draw(0.0, cap)
        return max(jittered, minimum or 0.0)

    def attempt_timeout(self, per_attempt: float, elapsed: float) -> float | None:
        """The deadline of the next attempt, or None when ``total_timeout`` has passed.

        Args:
            per_attempt: The deadline an attempt gets when enough time is left.
            elapsed: Seconds since the first attempt started.
        """
        remaining = self.total_timeout - elapsed
        if remaining <= 0:
            return None
        return min(per_attempt, remaining)

    def next_delay(
        self,
        *,
        code: grpc.StatusCode,
        attempt: int,
        elapsed: float,
        retry_after: float | None = None,
        rng: random.Random | None = None,
    ) -> float | None:
        """The wait before another attempt, or None when the call must not be retried.

        Args:
            code: The status the last attempt failed with.
            attempt: How many attempts were made so far (1 after the first).
            elapsed: Seconds since the first attempt started.
            retry_after: The server's RetryInfo delay, if any.
            rng: The random source (a seeded one in tests).
        """
        if not self.is_retryable(code) or attempt >= self.max_attempts:
            return None
        delay = self.backoff(attempt, retry_after, rng)
        if elapsed + delay >= self.total_timeout:
            return None
        return delay

    def delay_after(
        self,
        failure: AmperitySignalError,
        *,
        attempt: int,
        elapsed: float,
        rng: random.Random | None = None,
    ) -> float | None:
        """The wait before another attempt after ``failure``, or None to raise it.

        A permanent failure (e.g. a message over a gRPC size limit) is never retried,
        whatever its code; otherwise ``next_delay`` decides, with the failure's RetryInfo.
        """
        if failure.permanent:
            return None
        return self.next_delay(
            code=failure.code,
            attempt=attempt,
            elapsed=elapsed,
            retry_after=failure.retry_after,
            rng=rng,
        )


# Reopening a DeliverStream outlives a service restart: more attempts and a longer budget,
# counted from the last acknowledgement rather than from the first attempt.
DEFAULT_STREAM_RETRY = RetryPolicy(
    max_attempts=12, initial_backoff=0.2, max_backoff=5.0, total_timeout=120.0
)
