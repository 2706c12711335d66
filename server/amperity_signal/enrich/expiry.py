"""The expiry a Redis write carries: whole milliseconds that Redis takes, whatever the TTL."""

from __future__ import annotations

from amperity_signal.limits import MAX_TTL_SECONDS

MAX_EXPIRY_MS = MAX_TTL_SECONDS * 1000
"""The longest expiry sent to Redis, the configuration's longest TTL (ten years).

A TTL the configuration refuses can still reach a store (a last good copy lives
``attribute_ttl + stale_ttl``, jitter adds up to half, a ``CacheSettings`` built in code
is not bounded): past Redis's integer range every write failed, and the service took Redis
for down."""


def expiry_ms(ttl: float) -> int:
    """``ttl`` seconds as a Redis ``PX``: at least 1 ms, at most ``MAX_EXPIRY_MS``.

    ``inf`` is the longest; ``nan`` and a TTL of 0 or less the shortest.
    """
    if not ttl > 0:  # nan too
        return 1
    if ttl >= MAX_TTL_SECONDS:
        return MAX_EXPIRY_MS
    return max(1, int(ttl * 1000))
