"""A sharded pool of httpx transports: many small pools instead of one busy one.

httpx's connection pool does work proportional to the requests queued on it on every
state change (encode/httpx#3215). Measured here: one client with 8 requests in flight
made about 1,260 POST/s, with 32 in flight about 305 POST/s, and 32 spread over 8
clients about 1,420 POST/s. So each tenant gets ``shards`` transports, each kept at or
under ``max_in_flight_per_shard`` requests; further requests wait here, in O(1).

Requests go to the transport itself (``handle_async_request``, httpx's public transport
API), not through ``httpx.AsyncClient``: its per-request layers (auth and redirect
handling, header merging, a cookie jar updated from every response) did nothing for
Amperity's API and cost about 40 % of each POST's CPU in a profile of Deliver. Each
shard is an ``AiohttpTransport`` (aiohttp under httpx's transport API, a third of
httpcore's CPU per POST); a given transport replaces them all.
"""

from __future__ import annotations

import asyncio
import ssl

import httpx

from amperity_signal.amperity.aiohttp_transport import AiohttpTransport
from amperity_signal.proxies import ProxyRules


class ShardedPool:
    """``shards`` HTTP/1.1 keep-alive transports; each request goes to the least busy one.

    ``proxies`` (outbound proxies) and ``ssl_context`` (the CA certificates to verify
    against; certifi's when None) apply to the transports it makes, not to a given one.
    """

    def __init__(
        self,
        *,
        shards: int,
        max_in_flight_per_shard: int,
        transport: httpx.AsyncBaseTransport | None = None,
        proxies: ProxyRules | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if shards < 1 or max_in_flight_per_shard < 1:
            raise ValueError("shards and max_in_flight_per_shard must be at least 1")
        # A given transport (tests, the sandbox) is shared; otherwise one pool each.
        self._transports: list[httpx.AsyncBaseTransport] = [
            transport
            if transport is not None
            else AiohttpTransport(
                max_connections=max_in_flight_per_shard, proxies=proxies, ssl_context=ssl_context
            )
            for _ in range(shards)
        ]
        self._in_flight = [0] * shards
        self._capacity = asyncio.Semaphore(shards * max_in_flight_per_shard)
        self._next = 0
        self._waiting = 0

    @property
    def in_flight(self) -> list[int]:
        """Requests currently in flight on each shard."""
        return list(self._in_flight)

    @property
    def waiting(self) -> int:
        """Requests waiting for a shard, every one being full."""
        return self._waiting

    def _pick(self) -> int:
        """The least busy shard, rotating the starting point so ties spread out."""
        count = len(self._transports)
        start = self._next
        self._next = (start + 1) % count
        return min(
            ((start + offset) % count for offset in range(count)),
            key=lambda index: self._in_flight[index],
        )

    def transport(self, timeout: float | None = None) -> _Borrowed:
        """Borrow the least busy transport for one request, waiting when every shard is full.

        Use as ``async with pool.transport(timeout) as transport:``.

        Args:
            timeout: Seconds to wait for a free shard at most (None: no limit); when they
                pass, entering raises ``TimeoutError``. Only a wait is timed: with a shard
                free the transport is lent at once, with no timer scheduled.
        """
        return _Borrowed(self, timeout)

    async def aclose(self) -> None:
        """Close every transport (a shared one once)."""
        for transport in {id(t): t for t in self._transports}.values():
            await transport.aclose()


class _Borrowed:
    """One borrowing of a pooled transport (a class: cheaper per request than a generator)."""

    __slots__ = ("_index", "_pool", "_timeout")

    def __init__(self, pool: ShardedPool, timeout: float | None) -> None:
        self._pool = pool
        self._timeout = timeout
        self._index = -1

    async def __aenter__(self) -> httpx.AsyncBaseTransport:
        pool = self._pool
        capacity = pool._capacity
        if capacity.locked():
            pool._waiting += 1
            try:
                async with asyncio.timeout(self._timeout):
                    await capacity.acquire()
            finally:
                pool._waiting -= 1
        else:  # acquired without suspending: nothing to time
            await capacity.acquire()
        index = self._index = pool._pick()
        pool._in_flight[index] += 1
        return pool._transports[index]

    async def __aexit__(self, *exc_info: object) -> None:
        pool = self._pool
        pool._in_flight[self._index] -= 1
        pool._capacity.release()
