"""Per-client token buckets: a steady rate with a small burst, bounded in memory."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class TokenBuckets:
    """One token bucket per client key (the client IP), at most ``max_clients`` of them.

    A bucket is forgotten only once it has refilled, when a fresh one would hold the same
    tokens: forgetting never hands a client back a burst it has spent. While every tracked
    bucket was used within the last ``burst / rate`` seconds (more than ``max_clients``
    clients busy at once), clients without a bucket share one overflow bucket, so a
    client cycling through more addresses than the table holds stays limited too.

    Args:
        rate: Tokens added per second.
        burst: Bucket size: requests a fresh client may make at once.
        clock: Monotonic seconds; tests pass a fake.
        max_clients: Buckets kept at once, the overflow bucket aside.
    """

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float], max_clients: int
    ) -> None:
        if max_clients < 1:
            raise ValueError("rate_limit_max_clients must be at least 1 (one bucket per client).")
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._max_clients = max_clients
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._overflow: _Bucket | None = None

    @property
    def tracked(self) -> int:
        """How many clients have a bucket of their own."""
        return len(self._buckets)

    def take(self, key: str) -> float:
        """Spend one token for ``key``.

        Returns:
            0.0 when the request may proceed, else the seconds until a token is available.
        """
        now = self._clock()
        bucket = self._buckets.pop(key, None)
        if bucket is None and len(self._buckets) >= self._max_clients:
            bucket = self._evict_or_overflow(now)
        if bucket is None:
            bucket = _Bucket(tokens=self._burst, updated=now)
            self._buckets[key] = bucket
        elif bucket is not self._overflow:
            self._buckets[key] = bucket
        elapsed = max(0.0, now - bucket.updated)
        bucket.tokens = min(self._burst, bucket.tokens + elapsed * self._rate)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self._rate

    def _evict_or_overflow(self, now: float) -> _Bucket | None:
        """Make room by forgetting the least recent bucket if it has refilled.

        Returns:
            None when there is room now (the caller adds a fresh bucket), else the
            overflow bucket the newcomer shares with every other untracked client.
        """
        _, oldest = next(iter(self._buckets.items()))
        if oldest.tokens + (now - oldest.updated) * self._rate >= self._burst:
            self._buckets.popitem(last=False)
            return None
        if self._overflow is None:
            self._overflow = _Bucket(tokens=self._burst, updated=now)
        return self._overflow
