"""Per-tenant rate limits that hold over every one-second window *at Amperity*.

Amperity allows 500 Real-time API requests per second per tenant, ingest and profile
calls together, and counts a request when it *arrives*, which under load can be up to a
second after we decided to send it. So a request holds its slot from its grant until one
window after its attempt ends (answer received or attempt failed): a slot is granted at
time ``g`` only when fewer than ``limit`` requests are in flight or ended within
``(g - 1 s, g]``. Then no window ``[t, t + 1 s)`` at Amperity receives more than ``limit``:
take the last-granted request ``r*`` arriving in it (granted at ``g* < t + 1``); every other
one was granted before it and ends at or after its arrival ``>= t > g* - 1``, so each was
still counted at ``g*``.

The price is throughput: each request holds a slot for its latency plus a second, so a
tenant gets at most ``limit / (1 + latency)`` requests per second when every slot is busy.

``MemoryRateLimiter`` keeps the slots in the process; ``RedisRateLimiter`` keeps them in a
Redis sorted set, timed by the Redis server's clock so every replica agrees. Processes that
cannot share slots (``serve --workers N`` without Redis, or with Redis down) each keep a
``Share`` of the limit: ``slots`` held for a ``window`` that may be longer than a second, the
same proof then bounding the arrivals of any ``window`` at ``slots``. Waiters for a
key queue first-come, first-served in each process, and only the head of the queue checks
for a slot, sleeping until the earliest moment one can free up, so a burst never turns into
every waiter polling.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from amperity_signal.errors import AmperityUnavailable
from amperity_signal.redis_advice import redis_failure
from amperity_signal.redis_keys import RATE_LIMIT_PREFIX

logger = logging.getLogger(__name__)

WINDOW_SECONDS = 1.0
# The integration setting's default: how long an attempt may last when the caller says nothing.
DEFAULT_REQUEST_TIMEOUT = 10.0
# Smallest sleep, so a float rounding can never turn a wait into a busy loop.
_MIN_SLEEP = 1e-6
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class RateLimiter(Protocol):
    """Grants request slots under a per-key limit per second, counted at arrival."""

    def slot(
        self,
        key: str,
        limit: int,
        deadline: float | None,
        *,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    ) -> AbstractAsyncContextManager[float]:
        """Wait for a slot and hold it for one request attempt.

        Use as ``async with limiter.slot(key, limit, deadline) as waited:`` around exactly
        one HTTP attempt. Leaving the block in any way (answer, error, cancellation) ends the
        attempt; the slot stays counted for one more window after that.

        Args:
            key: What the limit applies to (the tenant id and base URL).
            limit: Requests allowed to arrive in any one-second window.
            deadline: Absolute clock time by which a slot is needed, or None to wait.
            request_timeout: The longest the attempt can last. A holder that never releases
                (a crashed process) stops counting this long after its grant, plus a margin
                and a window (``RedisRateLimiter`` only; a process's memory dies with it).

        Yields:
            Seconds waited for the slot (0 when one was free).

        Raises:
            AmperityUnavailable: ``RATE_LIMITED_LOCALLY`` when no slot can be free in time.
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


@dataclass(frozen=True, slots=True)
class Share:
    """One process's part of a tenant's limit: ``slots`` arrivals in any ``window`` seconds.

    Attributes:
        slots: Requests the process may have counted at once.
        window: How long a request stays counted after its attempt ends, in seconds.
    """

    slots: int
    window: float

    def describe(self) -> str:
        """The share in words, e.g. ``125 requests/s`` or ``1 request every 2 s``."""
        if self.window == WINDOW_SECONDS:
            return f"{self.slots} request{'s' if self.slots > 1 else ''}/s"
        return f"{self.slots} request every {self.window:.3g} s"


# Asked on every slot a limiter takes, of a handful of (limit, processes) pairs: kept.
@functools.lru_cache(maxsize=256)
def process_share(limit: int, processes: int) -> Share:
    """Each of ``processes`` processes' share of ``limit``, so that together they keep to it.

    With ``limit >= processes`` each keeps ``limit // processes`` slots a second: no
    one-second window at Amperity then receives more than ``limit`` in total. With fewer
    requests a second than processes, a whole slot a second each would add up to
    ``processes`` a second, so each keeps one slot for ``processes / limit`` seconds instead:
    every such window receives at most ``processes`` (``limit`` a second) in total. Only a
    shared limit (Redis) keeps that many from arriving in the same second as well.

    Args:
        limit: The tenant's requests per second.
        processes: How many processes send for the tenant, each with its own bookkeeping.

    Raises:
        ValueError: When either is below 1.
    """
    if limit < 1 or processes < 1:
        raise ValueError("limit and processes must be at least 1")
    if limit >= processes:
        return Share(limit // processes, WINDOW_SECONDS)
    return Share(1, WINDOW_SECONDS * processes / limit)


def shares_together(limit: int, processes: int) -> str:
    """What ``processes`` shares of ``limit`` let through in all, in words.

    E.g. ``at most 500 requests/s``, or, with fewer requests a second than processes,
    ``2 requests/s over every 2 s, but up to 4 in the same second``.
    """
    share = process_share(limit, processes)
    if share.window == WINDOW_SECONDS:
        return f"at most {limit} requests/s"
    return (
        f"{limit} requests/s over every {share.window:.3g} s, but up to {processes} in the "
        "same second"
    )


@dataclass(frozen=True)
class _Held:
    """A granted slot: its member in the Redis sorted set, or None for a local slot."""

    redis_member: str | None = None


@dataclass
class _KeySlots:
    """One key's local slots: requests in flight and the end times of recent ones."""

    in_flight: int = 0
    ended: list[float] = field(default_factory=list)  # a min-heap of end times


class _LocalSlots:
    """The slot bookkeeping of one process (no waiting; every method is atomic in asyncio)."""

    def __init__(self) -> None:
        self._keys: dict[str, _KeySlots] = {}

    def take(self, key: str, share: Share, now: float, *, peek: bool) -> tuple[bool, float]:
        """Take a slot if one is free (unless ``peek``): (taken, seconds until one can be)."""
        slots = self._keys.setdefault(key, _KeySlots())
        while slots.ended and slots.ended[0] <= now - share.window:
            heapq.heappop(slots.ended)
        if slots.in_flight + len(slots.ended) < share.slots:
            if not peek:
                slots.in_flight += 1
            return not peek, 0.0
        # A request still in flight ends at ``now`` at the earliest, so frees its slot no
        # sooner than a window from now; an ended one frees it a window after its end.
        earliest_end = min(slots.ended[0], now) if slots.ended else now
        return False, earliest_end + share.window - now

    def release(self, key: str, now: float) -> None:
        """The attempt holding one of ``key``'s slots ended at ``now``."""
        slots = self._keys.setdefault(key, _KeySlots())
        slots.in_flight = max(0, slots.in_flight - 1)
        heapq.heappush(slots.ended, now)


class _QueuedLimiter:
    """The waiting shared by both limiters: a FIFO queue per key whose head looks for slots."""

    def __init__(self, *, clock: Clock, sleep: Sleep, processes: int) -> None:
        if processes < 1:
            raise ValueError("processes must be at least 1")
        self._clock = clock
        self._sleep = sleep
        self._processes = processes
        self._queues: dict[str, deque[asyncio.Future[None]]] = {}

    def _local_share(self, limit: int) -> Share:
        """This process's share of ``limit`` when it cannot share slots with the others."""
        return process_share(limit, self._processes)

    async def _take(
        self, key: str, limit: int, request_timeout: float, *, peek: bool
    ) -> tuple[_Held | None, float]:
        """Take a free slot (unless ``peek``): (the slot or None, seconds until one can be)."""
        raise NotImplementedError

    async def _release(self, key: str, held: _Held) -> None:
        """End the attempt holding ``held``."""
        raise NotImplementedError

    def slot(
        self,
        key: str,
        limit: int,
        deadline: float | None,
        *,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    ) -> _Slot:
        """See ``RateLimiter.slot``."""
        return _Slot(self, key, limit, deadline, request_timeout)

    async def _acquire(
        self, key: str, limit: int, deadline: float | None, request_timeout: float
    ) -> tuple[_Held, float]:
        started = self._clock()
        # With others already queued, only look: taking a slot would jump the queue.
        held, wait = await self._take(key, limit, request_timeout, peek=key in self._queues)
        if held is not None:
            return held, 0.0
        self._refuse_after_deadline(key, limit, wait, deadline)
        queue = self._queues.setdefault(key, deque())
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.append(turn)
        try:
            if queue[0] is not turn and not await self._wait_turn(turn, deadline):
                _, wait = await self._take(key, limit, request_timeout, peek=True)
                raise rate_limited(key, limit, max(wait, _MIN_SLEEP))
            while True:
                held, wait = await self._take(key, limit, request_timeout, peek=False)
                if held is not None:
                    return held, self._clock() - started
                self._refuse_after_deadline(key, limit, wait, deadline)
                await self._sleep(max(wait, _MIN_SLEEP))
        finally:
            self._leave(key, queue, turn)

    def _refuse_after_deadline(
        self, key: str, limit: int, wait: float, deadline: float | None
    ) -> None:
        if deadline is not None and self._clock() + wait > deadline:
            raise rate_limited(key, limit, wait)

    async def _wait_turn(self, turn: asyncio.Future[None], deadline: float | None) -> bool:
        """Wait to reach the head of the queue; False if the deadline comes first."""
        if deadline is None:
            await turn
            return True
        timer = asyncio.ensure_future(self._sleep(max(deadline - self._clock(), _MIN_SLEEP)))
        try:
            await asyncio.wait((turn, timer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
        return turn.done()

    def _leave(
        self, key: str, queue: deque[asyncio.Future[None]], turn: asyncio.Future[None]
    ) -> None:
        """Leave the queue; a leaving head hands the turn to the next waiter."""
        was_head = bool(queue) and queue[0] is turn
        queue.remove(turn)
        if was_head and queue and not queue[0].done():
            queue[0].set_result(None)
        if not queue and self._queues.get(key) is queue:
            del self._queues[key]


@dataclass(slots=True)
class _Slot:
    """One holding of a slot (a class: cheaper per request than ``@asynccontextmanager``).

    Entering waits for the slot and returns the seconds waited; leaving in any way (the
    block's end, an error, cancellation) releases it, and the error goes on.
    """

    _limiter: _QueuedLimiter
    _key: str
    _limit: int
    _deadline: float | None
    _request_timeout: float
    _held: _Held | None = None

    async def __aenter__(self) -> float:
        self._held, waited = await self._limiter._acquire(
            self._key, self._limit, self._deadline, self._request_timeout
        )
        return waited

    async def __aexit__(self, *exc_info: object) -> None:
        held, self._held = self._held, None
        if held is not None:
            await self._limiter._release(self._key, held)


class MemoryRateLimiter(_QueuedLimiter):
    """Slots held in memory, for one process.

    Args:
        clock: Monotonic clock that deadlines are expressed in.
        sleep: How to wait for a slot.
        processes: How many processes send for the same tenants (``serve --workers N``),
            each with a limiter of its own: each keeps its ``process_share`` of the limit,
            so together they stay under the tenant's limit.
    """

    def __init__(
        self, *, clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep, processes: int = 1
    ) -> None:
        super().__init__(clock=clock, sleep=sleep, processes=processes)
        self._slots = _LocalSlots()

    async def _take(
        self, key: str, limit: int, request_timeout: float, *, peek: bool
    ) -> tuple[_Held | None, float]:
        taken, wait = self._slots.take(key, self._local_share(limit), self._clock(), peek=peek)
        return (_Held() if taken else None), wait

    async def _release(self, key: str, held: _Held) -> None:
        self._slots.release(key, self._clock())


# Atomically: drop requests that ended a window ago or more, then take a slot when fewer
# than ``limit`` remain (score = provisional end, TIME + max hold, until released), or say
# how long until one can free up. ARGV[4] = '' only looks. Returns {taken, wait_us}. Times
# are the Redis server's, in integer microseconds, so every replica shares one clock.
_TAKE_SCRIPT = """
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local hold = tonumber(ARGV[3])
local member = ARGV[4]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
if redis.call('ZCARD', key) < limit then
  if member == '' then
    return {0, 0}
  end
  redis.call('ZADD', key, now + hold, member)
  local ttl = math.floor((hold + window) / 1000) + 1000
  if redis.call('PTTL', key) < ttl then
    redis.call('PEXPIRE', key, ttl)
  end
  return {1, 0}
end
local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
local earliest_end = math.min(tonumber(first[2]), now)
return {0, earliest_end + window - now}
"""

# The attempt of ARGV[1] ended: its score becomes the Redis server's TIME (if still held).
_RELEASE_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
return redis.call('ZADD', KEYS[1], 'XX', now, ARGV[1])
"""

REDIS_SCRIPTS = (_TAKE_SCRIPT, _RELEASE_SCRIPT)
"""The Lua scripts the limiter runs on Redis, for the start-up check that it may run them."""


class RedisRateLimiter(_QueuedLimiter):
    """Slots in a Redis sorted set, shared by every process using the same Redis.

    Each request is a member whose score is its end time: provisionally its grant plus
    ``request_timeout + hold_margin`` (so a crashed process cannot keep a slot for good),
    set to the Redis server's time when the attempt ends.

    When Redis cannot be reached, slots come from local bookkeeping, each of the
    ``processes`` workers of this replica keeping its ``process_share`` as the memory
    backend does (other replicas cannot be counted), and one warning is logged per outage;
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
        hold_margin: float = 1.0,
        prefix: str = RATE_LIMIT_PREFIX,
        processes: int = 1,
    ) -> None:
        super().__init__(clock=clock, sleep=sleep, processes=processes)
        self._redis = redis_client
        self._take_script = redis_client.register_script(_TAKE_SCRIPT)
        self._release_script = redis_client.register_script(_RELEASE_SCRIPT)
        self._retry_redis_after = retry_redis_after
        self._redis_timeout = redis_timeout
        self._hold_margin = hold_margin
        self._prefix = prefix
        self._fallback = _LocalSlots()
        self._redis_down_until: float | None = None

    def redis_key(self, key: str) -> str:
        """The sorted set holding ``key``'s slots."""
        return f"{self._prefix}{key}"

    async def _take(
        self, key: str, limit: int, request_timeout: float, *, peek: bool
    ) -> tuple[_Held | None, float]:
        now = self._clock()
        if self._redis_down_until is None or now >= self._redis_down_until:
            member = "" if peek else uuid.uuid4().hex
            hold_us = int((request_timeout + self._hold_margin) * 1_000_000)
            try:
                async with asyncio.timeout(self._redis_timeout):
                    taken, wait_us = await self._take_script(
                        keys=[self.redis_key(key)],
                        args=[limit, int(WINDOW_SECONDS * 1_000_000), hold_us, member],
                    )
            except (RedisError, OSError, TimeoutError) as exc:
                if self._redis_down_until is None:
                    logger.warning(
                        "shared rate limit unavailable: %s; until it is back, %s is limited "
                        "locally %s",
                        redis_failure(exc),
                        key,
                        self._fallback_described(limit),
                    )
                self._redis_down_until = now + self._retry_redis_after
            else:
                if self._redis_down_until is not None:
                    logger.info("Redis is reachable again; the rate limit is shared again.")
                    self._redis_down_until = None
                held = _Held(redis_member=member) if int(taken) else None
                return held, int(wait_us) / 1_000_000
        taken_locally, wait = self._fallback.take(key, self._local_share(limit), now, peek=peek)
        return (_Held() if taken_locally else None), wait

    def _fallback_described(self, limit: int) -> str:
        """How the outage limits this replica, and what it cannot limit, in a sentence."""
        if self._processes == 1:
            kept = f"at the full {limit} requests/s, this replica having one process"
        else:
            kept = (
                f"at {self._local_share(limit).describe()} in each of this "
                f"replica's {self._processes} worker processes (together "
                f"{shares_together(limit, self._processes)})"
            )
        return (
            f"{kept}; other replicas are not counted, so N replicas can send up to N times "
            "the limit."
        )

    async def _release(self, key: str, held: _Held) -> None:
        if held.redis_member is None:
            self._fallback.release(key, self._clock())
            return
        try:
            async with asyncio.timeout(self._redis_timeout):
                await self._release_script(keys=[self.redis_key(key)], args=[held.redis_member])
        except (RedisError, OSError, TimeoutError) as exc:
            # Safe to drop: the slot keeps counting until its provisional end instead.
            logger.debug("Could not release a rate-limit slot in Redis (%s).", type(exc).__name__)
