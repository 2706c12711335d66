"""When to retry a failed call and how long to wait: pure decisions, no I/O.

Only ``UNAVAILABLE`` and ``RESOURCE_EXHAUSTED`` are retried: the service answers them when
Amperity (or the service itself) could not take the event *yet*, and the event was not
delivered. Every other code means retrying the same request cannot help.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc

if TYPE_CHECKING:
    from amperity_signal_client.errors import AmperitySignalError

RETRYABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})
_STATUS_BY_NUMBER = {status.value[0]: status for status in grpc.StatusCode}
_CODES_WANTED = (
    "a set of gRPC status codes, grpc.StatusCode members or their numbers 0 to 16, "
    "e.g. {grpc.StatusCode.UNAVAILABLE, 8}"
)


def _status_codes(value: object) -> frozenset[grpc.StatusCode]:
    """``retryable_codes`` as grpc.StatusCode members, numbers (14: UNAVAILABLE) converted.

    The Node client takes them as numbers; a number used to be kept as it was: unary calls
    then never retried and ``deliver_many`` failed with an AttributeError at its first
    per-event error.

    Raises:
        TypeError: When it is not a collection, or holds something that is neither a
            ``grpc.StatusCode`` nor an ``int`` (``bool`` included).
        ValueError: When it holds a number that is no gRPC status code.
    """
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise TypeError(f"RetryPolicy.retryable_codes must be {_CODES_WANTED}; got {value!r}.")
    codes = set()
    for code in value:
        if isinstance(code, grpc.StatusCode):
            codes.add(code)
        elif isinstance(code, bool) or not isinstance(code, int):
            raise TypeError(
                f"RetryPolicy.retryable_codes must be {_CODES_WANTED}; got {code!r} in it."
            )
        elif code in _STATUS_BY_NUMBER:
            codes.add(_STATUS_BY_NUMBER[code])
        else:
            raise ValueError(
                f"RetryPolicy.retryable_codes must be {_CODES_WANTED}; got {code!r} in it."
            )
    return frozenset(codes)


def _number(option: str, value: object, wanted: str) -> float:
    """``value`` as a float, refused naming ``option`` when it is not a real number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{option} must be {wanted}, not {type(value).__name__}.")
    return float(value)


def check_timeout(option: str, value: object, *, example: float, otherwise: str = "") -> float:
    """A deadline or idle timeout in seconds, refused unless a finite number above zero.

    Zero or less would fail every call before it is sent, NaN fails them the same way,
    and an infinite wait cannot be given to the blocking client's waits.

    Args:
        option: The option's name, as the caller spelt it (e.g. ``default_timeout``).
        value: What the caller passed.
        example: A sensible value, quoted in the error.
        otherwise: What else the option accepts, e.g. ``", or None for ..."``.

    Raises:
        ValueError: Naming ``option``, the value given and what to pass instead.
        TypeError: When ``value`` is not a number (``bool`` included).
    """
    wanted = f"a finite number of seconds more than zero, e.g. {example!r}{otherwise}"
    seconds = _number(option, value, wanted)
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"{option} must be {wanted}; got {value!r}.")
    return seconds


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
        retryable_codes: The status codes worth retrying; given as ``grpc.StatusCode``
            members or their numbers (``{14, 8}``, as the Node client takes them), in any
            collection, and kept as a frozenset of ``grpc.StatusCode``.
    """

    max_attempts: int = 5
    initial_backoff: float = 0.1
    max_backoff: float = 5.0
    multiplier: float = 2.0
    total_timeout: float = 30.0
    retryable_codes: frozenset[grpc.StatusCode] = field(default=RETRYABLE_CODES)

    def __post_init__(self) -> None:
        # Refused here rather than at the first retry: a NaN or negative value would
        # end every call early, or retry without waiting, long after the policy was made.
        attempts = self.max_attempts
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            message = (
                "RetryPolicy.max_attempts must be a whole number, 1 or more (1: no "
                f"retries), e.g. 5; got {attempts!r}."
            )
            # Not a number (bool is not one) is a TypeError, as for every other setting.
            if isinstance(attempts, bool) or not isinstance(attempts, int | float):
                raise TypeError(message)
            raise ValueError(message)
        for option, example in (("initial_backoff", 0.1), ("max_backoff", 5.0)):
            value = getattr(self, option)
            wanted = f"a finite number of seconds, zero or more, e.g. {example!r}"
            seconds = _number(f"RetryPolicy.{option}", value, wanted)
            if not (math.isfinite(seconds) and seconds >= 0):
                raise ValueError(f"RetryPolicy.{option} must be {wanted}; got {value!r}.")
        wanted = "a finite number, 1 or more (1: no growth), e.g. 2.0"
        multiplier = _number("RetryPolicy.multiplier", self.multiplier, wanted)
        if not (math.isfinite(multiplier) and multiplier >= 1):
            raise ValueError(f"RetryPolicy.multiplier must be {wanted}; got {self.multiplier!r}.")
        wanted = (
            "a number of seconds more than zero, e.g. 30.0, or math.inf for no overall deadline"
        )
        total = _number("RetryPolicy.total_timeout", self.total_timeout, wanted)
        if not total > 0:  # NaN too: it compares false to everything
            raise ValueError(
                f"RetryPolicy.total_timeout must be {wanted}; got {self.total_timeout!r}."
            )
        # A frozen dataclass: the normalised set replaces what was given.
        object.__setattr__(self, "retryable_codes", _status_codes(self.retryable_codes))

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
