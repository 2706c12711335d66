"""Per-client token buckets: a steady rate with a small burst, bounded in memory."""

from __future__ import annotations

import functools
import socket
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

IPV6_PREFIX_RANGE = range(48, 129)
"""The IPv6 prefix lengths a client may be keyed by: /48 (a whole site) to /128 (one address)."""

IPV6_KEYS_CACHED = 4_096
"""IPv6 addresses whose key is remembered: a returning visitor's costs a dictionary lookup."""

_MAPPED = bytes(10) + b"\xff\xff"
"""The first 12 bytes of an IPv4-mapped IPv6 address, ``::ffff:a.b.c.d``."""


def check_ipv6_prefix(prefix: object, name: str) -> None:
    """Refuse an IPv6 prefix length outside ``IPV6_PREFIX_RANGE``, naming ``name`` and the fix.

    Raises:
        ValueError: When ``prefix`` is not a whole number from 48 to 128.
    """
    if type(prefix) is not int or prefix not in IPV6_PREFIX_RANGE:
        raise ValueError(
            f"{name} must be a whole number from 48 to 128, got {prefix!r}; use 64, the "
            "network one IPv6 subscriber is given (128 limits each address alone)."
        )


def client_keys(ipv6_prefix: int) -> Callable[[str], str]:
    """The function giving a client address its rate-limit key: IPv4 per address, IPv6 per network.

    An IPv6 subscriber is normally given a whole /64 and may use any address in it (privacy
    extensions change it every day, and a client can pick a fresh one per request), so a
    bucket per IPv6 address would not limit anyone. An IPv6 client is keyed by its network,
    ``2001:db8:1:2::/64``; an IPv4-mapped address (``::ffff:203.0.113.7``, what a dual-stack
    socket reports for an IPv4 peer) by its IPv4 address, the same key as ``203.0.113.7``.
    Anything else (an IPv4 address, or a forwarded name such as ``unknown``) is its own key.

    This runs on every API request, so it is a plain function (a callable object costs
    three times as much to call) that parses nothing for IPv4 and builds no ``ipaddress``
    object for IPv6 (``inet_pton``/``inet_ntop``, the last ``IPV6_KEYS_CACHED`` addresses'
    keys remembered; figures in docs/benchmarks.md, session 16).

    Args:
        ipv6_prefix: The prefix length IPv6 clients are keyed by, 48 to 128.

    Raises:
        ValueError: When ``ipv6_prefix`` is not a whole number from 48 to 128.
    """
    check_ipv6_prefix(ipv6_prefix, "rate_limit_ipv6_prefix")
    mask = ((1 << ipv6_prefix) - 1) << (128 - ipv6_prefix)
    suffix = f"/{ipv6_prefix}"

    @functools.lru_cache(maxsize=IPV6_KEYS_CACHED)
    def ipv6_key(host: str) -> str:
        try:
            packed = socket.inet_pton(socket.AF_INET6, host.partition("%")[0])
        except OSError:  # not an address: a forwarded name, keyed as it is
            return host
        if packed[:12] == _MAPPED:
            return socket.inet_ntop(socket.AF_INET, packed[12:])
        network = (int.from_bytes(packed) & mask).to_bytes(16)
        return socket.inet_ntop(socket.AF_INET6, network) + suffix

    def client_key(host: str) -> str:
        return host if ":" not in host else ipv6_key(host)  # IPv4, the usual case: as is

    return client_key


@dataclass
class _Bucket:
    tokens: float
    updated: float


class TokenBuckets:
    """One token bucket per client key (``client_keys``), at most ``max_clients`` of them.

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
        # Inline, not ``_refilled``: this runs on every API request.
        elapsed = max(0.0, now - bucket.updated)
        bucket.tokens = min(self._burst, bucket.tokens + elapsed * self._rate)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self._rate

    def wait(self, key: str) -> float:
        """The seconds until ``key`` may spend a token (0.0: now), spending none.

        An untracked client would get a fresh bucket, or, while every tracked one is busy,
        share the overflow bucket (``take``).
        """
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None and len(self._buckets) >= self._max_clients:
            _, oldest = next(iter(self._buckets.items()))
            if self._refilled(oldest, now) < self._burst:
                bucket = self._overflow
        tokens = self._burst if bucket is None else self._refilled(bucket, now)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self._rate

    def _refilled(self, bucket: _Bucket, now: float) -> float:
        """The tokens ``bucket`` holds at ``now``."""
        return min(self._burst, bucket.tokens + max(0.0, now - bucket.updated) * self._rate)

    def _evict_or_overflow(self, now: float) -> _Bucket | None:
        """Make room by forgetting the least recent bucket if it has refilled.

        Returns:
            None when there is room now (the caller adds a fresh bucket), else the
            overflow bucket the newcomer shares with every other untracked client.
        """
        _, oldest = next(iter(self._buckets.items()))
        if self._refilled(oldest, now) >= self._burst:
            self._buckets.popitem(last=False)
            return None
        if self._overflow is None:
            self._overflow = _Bucket(tokens=self._burst, updated=now)
        return self._overflow
