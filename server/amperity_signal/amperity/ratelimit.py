"""Per-tenant rate limits that hold over every sliding one-second window.

Amperity allows 500 Real-time API requests per second per tenant, ingest and profile
calls together. Both limiters keep a log of granted slots per key and *reserve* a slot
before waiting for it, so a grant at time ``g`` is only made when fewer than ``limit``
grants lie in ``(g - 1 s, g]``: no window of one second, wherever it starts, ever holds
more than ``limit`` requests, and there is no burst allowance to overshoot with.

``MemoryRateLimiter`` holds the log in the process; ``RedisRateLimiter`` keeps it in a
Redis sorted set, timed by the Redis server's clock so every replica agrees.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from amperity_signal.errors import AmperityUnavailable

logger = logging.getLogger(__name__)

WINDOW_SECONDS = 1.0
# Smallest sleep, so a float rounding can never turn a wait into a busy loop.
_MIN_SLEEP = 1e-6
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class RateLimiter(Protocol):
    """Grants request slots under a per-key limit per second."""

    async def acquire(self, key: str, limit: int, deadline: float | None) -> float:
        """Wait for a slot and take it.

        Args:
            key: What the limit applies to (the tenant id and base URL).
            limit: Requests allowed in any one-second window.
            deadline: Absolute clock time by which a slot is needed, or None to wait.

        Returns:
            Seconds waited (0 when a slot was free).

        Raises:
            AmperityUnavailable: ``RATE_LIMITED_LOCALLY`` when no slot is free in time.
        """
        ...


def rate_limited(key: str, limit: int, wait: float) -> AmperityUnavailable:
    """The error for a slot that would come after the caller's deadline."""
    return AmperityUnavailable(
        f"the per-tenant rate limit of {limit} requests/s is used up: the next slot is in "
        f"{wait:.3f}s, after this call's deadline. Retry later, give calls a longer deadline, "
        "or raise rate_limit_per_second if Amperity granted this tenant a higher limit.",
        reason="RATE_LIMITED_LOCALLY",
        attempts=0,
        retry_after=max(wait, 0.001),
        metadata={"limit": str(limit), "wait_seconds": f"{wait:.3f}", "limiter_key": key},
    )


class MemoryRateLimiter:
    """A sliding log of granted slot times per key, for one process."""

    def __init__(self, *, clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep) -> None:
        self._clock = clock
        self._sleep = sleep
        self._logs: dict[str, deque[float]] = {}

    def _reserve(self, key: str, limit: int, deadline: float | None) -> tuple[float, float]:
        """Reserve the earliest slot: returns (slot time, now). No await: atomic in asyncio."""
        now = self._clock()
        log = self._logs.setdefault(key, deque())
        while log and now - log[0] >= WINDOW_SECONDS:
            log.popleft()
        while len(log) > limit:
            log.popleft()  # only the latest ``limit`` slots decide the next one
        slot = now if len(log) < limit else max(now, log[-limit] + WINDOW_SECONDS)
        if deadline is not None and slot > deadline:
            raise rate_limited(key, limit, slot - now)
        log.append(slot)
        return slot, now

    async def acquire(self, key: str, limit: int, deadline: float | None) -> float:
        """See ``RateLimiter.acquire``."""
        slot, now = self._reserve(key, limit, deadline)
        if slot <= now:
            return 0.0
        try:
            await self._sleep(max(slot - now, _MIN_SLEEP))
        except asyncio.CancelledError:
            # Give the slot back; later reservations only become more conservative.
            log = self._logs.get(key)
            if log is not None and slot in log:
                log.remove(slot)
            raise
        return slot - now


# Atomically: drop slots older than the window, then grant ``now`` or reserve the slot one
# window after the limit-th latest one. Returns {granted, wait_us}. Times are the Redis
# server's, in integer microseconds, so every replica shares one clock and no float drifts.
_ACQUIRE_SCRIPT = """
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
local count = redis.call('ZCARD', key)
local slot = now
if count >= limit then
  local base = redis.call('ZRANGE', key, count - limit, count - limit, 'WITHSCORES')
  slot = math.max(now, tonumber(base[2]) + window)
end
local wait = slot - now
if max_wait >= 0 and wait > max_wait then
  return {0, wait}
end
redis.call('ZADD', key, slot, ARGV[4])
redis.call('PEXPIRE', key, math.floor((wait + window) / 1000) + 1000)
return {1, wait}
"""


class RedisRateLimiter:
    """A sliding log in a Redis sorted set, shared by every process using the same Redis.

    When Redis cannot be reached, slots come from a local ``MemoryRateLimiter`` with the
    full limit (the number of replicas is unknown) and one warning is logged per outage;
    Redis is tried again after ``retry_redis_after`` seconds. A Redis answer slower than
    ``redis_timeout`` counts as unreachable, so a struggling Redis (or the client's own
    reconnect retries) never stalls Amperity calls.
    """

    def __init__(
        self,
        redis_client: Redis,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        retry_redis_after: float = 5.0,
        redis_timeout: float = 1.0,
        prefix: str = "amperity-signal:rl:",
    ) -> None:
        self._redis = redis_client
        self._script = redis_client.register_script(_ACQUIRE_SCRIPT)
        self._clock = clock
        self._sleep = sleep
        self._retry_redis_after = retry_redis_after
        self._redis_timeout = redis_timeout
        self._prefix = prefix
        self._fallback = MemoryRateLimiter(clock=clock, sleep=sleep)
        self._redis_down_until: float | None = None

    def redis_key(self, key: str) -> str:
        """The sorted set holding ``key``'s slots."""
        return f"{self._prefix}{key}"

    async def acquire(self, key: str, limit: int, deadline: float | None) -> float:
        """See ``RateLimiter.acquire``."""
        now = self._clock()
        if self._redis_down_until is not None and now < self._redis_down_until:
            return await self._fallback.acquire(key, limit, deadline)
        max_wait_us = -1 if deadline is None else max(0, int((deadline - now) * 1_000_000))
        try:
            async with asyncio.timeout(self._redis_timeout):
                granted, wait_us = await self._script(
                    keys=[self.redis_key(key)],
                    args=[limit, int(WINDOW_SECONDS * 1_000_000), max_wait_us, uuid.uuid4().hex],
                )
        except (RedisError, OSError, TimeoutError) as exc:
            if self._redis_down_until is None:
                logger.warning(
                    "Redis is unreachable for the shared rate limit (%s); limiting %s "
                    "locally at the full limit until it is back.",
                    type(exc).__name__,
                    key,
                )
            self._redis_down_until = now + self._retry_redis_after
            return await self._fallback.acquire(key, limit, deadline)
        if self._redis_down_until is not None:
            logger.info("Redis is reachable again; the rate limit is shared again.")
            self._redis_down_until = None
        wait = int(wait_us) / 1_000_000
        if not int(granted):
            raise rate_limited(key, limit, wait)
        if wait > 0:
            await self._sleep(wait)
        return wait
