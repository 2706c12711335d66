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
    """One token bucket per client key (the client IP).

    Args:
        rate: Tokens added per second.
        burst: Bucket size: requests a fresh client may make at once.
        clock: Monotonic seconds; tests pass a fake.
        max_clients: Buckets kept at once; the least recently used are forgotten, which
            only ever errs on the side of letting a request through.
    """

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float], max_clients: int
    ) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._max_clients = max_clients
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def take(self, key: str) -> float:
        """Spend one token for ``key``.

        Returns:
            0.0 when the request may proceed, else the seconds until a token is available.
        """
        now = self._clock()
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = _Bucket(tokens=self._burst, updated=now)
        elapsed = max(0.0, now - bucket.updated)
        bucket.tokens = min(self._burst, bucket.tokens + elapsed * self._rate)
        bucket.updated = now
        self._buckets[key] = bucket
        while len(self._buckets) > self._max_clients:
            self._buckets.popitem(last=False)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self._rate
