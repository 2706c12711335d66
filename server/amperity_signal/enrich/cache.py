"""``CacheBackend``: a cache store that survives outages, TTL jitter, and ``build_cache``.

The code above this module is the same for memory and Redis. When the store raises a
connection error the backend logs once, reports itself unavailable, and answers every call
as a miss (writes are dropped) until ``retry_interval`` has passed; then it tries the store
again and logs when it is back. Enrichment therefore keeps working, just without a cache.
``CacheBackend`` is itself a ``CacheStore`` (bytes in, bytes out), so other users of the
shared cache (the browser consent ledger) get the same behaviour, with one exception:
``keep_newer``, whose answer says which entry is in force, raises ``CacheUnavailable``
during an outage instead of pretending the offered entry was kept.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Final

from redis.exceptions import RedisError

from amperity_signal.config import CacheSettings
from amperity_signal.enrich.identity_entry import IdentityMerge
from amperity_signal.enrich.keys import kind_of
from amperity_signal.enrich.ports import CacheStore
from amperity_signal.enrich.stores import REDIS_SECONDS, MemoryStore, RedisStore
from amperity_signal.errors import CacheUnavailable
from amperity_signal.metrics import Metrics
from amperity_signal.redis_advice import redis_failure

LOGGER_NAME: Final = "amperity_signal.enrich"
DEFAULT_RETRY_INTERVAL: Final = 1.0
"""Seconds without trying the store after it failed, so an outage costs no timeouts."""


class Jitter:
    """Spreads expiries by ±``fraction`` so entries written together do not expire together.

    Args:
        fraction: The CacheSettings ``jitter`` (0 disables it).
        rng: A ``random.Random``, injectable for deterministic tests.
    """

    def __init__(self, fraction: float, rng: random.Random | None = None) -> None:
        self._fraction = fraction
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 - not for secrets

    def __call__(self, ttl: float) -> float:
        """``ttl`` scaled by a random factor in ``[1 - fraction, 1 + fraction]``."""
        if self._fraction <= 0:
            return ttl
        return ttl * (1 + self._rng.uniform(-self._fraction, self._fraction))


class CacheBackend:
    """A ``CacheStore`` over another store that never fails its caller on an outage.

    Args:
        store: Where entries live (``MemoryStore`` or ``RedisStore``).
        metrics: ``cache_events{cache, result="error"}`` counts reads lost to an outage.
        clock: Monotonic seconds (for the retry interval).
        unavailable_errors: Exceptions that mean the store is unreachable.
        retry_interval: Seconds to skip the store after a failure.
        logger: Where outages are logged.
    """

    def __init__(
        self,
        store: CacheStore,
        *,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
        unavailable_errors: tuple[type[BaseException], ...] = (OSError,),
        retry_interval: float = DEFAULT_RETRY_INTERVAL,
        logger: logging.Logger | None = None,
    ) -> None:
        self.store = store
        self._metrics = metrics
        self._clock = clock
        self._errors = unavailable_errors
        self._retry_interval = retry_interval
        self._logger = logger or logging.getLogger(LOGGER_NAME)
        self._down_until: float | None = None
        self._on_available: list[Callable[[], None]] = []

    @property
    def available(self) -> bool:
        """False from a failed store call until a later call succeeds."""
        return self._down_until is None

    def _skip(self) -> bool:
        return self._down_until is not None and self._clock() < self._down_until

    def _failed(self, exc: BaseException) -> None:
        if self._down_until is None:
            self._logger.warning(
                "cache unavailable, enriching without a cache until it answers again: %s",
                redis_failure(exc),
            )
        self._down_until = self._clock() + self._retry_interval

    def on_available(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever the store answers again after failing.

        The consent ledger's held states are then written at once, not at their next try.
        """
        self._on_available.append(callback)

    def _succeeded(self) -> None:
        if self._down_until is not None:
            self._logger.info("cache available again")
            self._down_until = None
            for callback in self._on_available:
                callback()

    def lost(self, keys: Sequence[str]) -> list[bytes | None]:
        """Count a read of each key lost to an outage (``result="error"``); Nones for them."""
        for key in keys:
            self._metrics.cache_events.labels(cache=kind_of(key), result="error").inc()
        return [None] * len(keys)

    async def get(self, key: str, *, counted: bool = True) -> bytes | None:
        """The value under ``key``, or None (absent, expired or store unavailable).

        An outage counts the lost read unless ``counted`` is false: a caller re-reading a
        key it counted already (``JsonCache.get``'s ``count``) counts each read once.
        """
        if self._down_until is not None and self._skip():
            return self.lost((key,))[0] if counted else None
        try:
            value = await self.store.get(key)
        except self._errors as exc:
            self._failed(exc)
            return self.lost((key,))[0] if counted else None
        if self._down_until is not None:  # every read of an Enrich hit passes here
            self._succeeded()
        return value

    async def multi_get(
        self, keys: Sequence[str], *, counted: int | None = None
    ) -> list[bytes | None]:
        """The values of several keys in one store round trip (all None during an outage).

        An outage counts a lost read for each key, or for the first ``counted`` keys only:
        a caller that reads a key ahead of need counts it when it uses it (``get_with``),
        and one re-reading keys it counted already counts none (0).
        """
        if self._down_until is not None and self._skip():  # inline, as ``get``
            self.lost(keys[:counted])
            return [None] * len(keys)
        try:
            values = await self.store.multi_get(keys)
        except self._errors as exc:
            self._failed(exc)
            self.lost(keys[:counted])
            return [None] * len(keys)
        if self._down_until is not None:  # a page's reads and a personalised hit pass here
            self._succeeded()
        return values

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        """Store ``value`` for ``ttl`` seconds; dropped during an outage."""
        if self._skip():
            return
        try:
            await self.store.set(key, value, ttl)
        except self._errors as exc:
            self._failed(exc)
        else:
            self._succeeded()

    async def delete(self, key: str) -> None:
        """Remove ``key``; ignored during an outage."""
        if self._skip():
            return
        try:
            await self.store.delete(key)
        except self._errors as exc:
            self._failed(exc)
        else:
            self._succeeded()

    async def copy_object(self, source: str, destination: str) -> None:
        """The store's ``copy_object``; dropped during an outage, as a write is."""
        if self._skip():
            return
        try:
            await self.store.copy_object(source, destination)
        except self._errors as exc:
            self._failed(exc)
        else:
            self._succeeded()

    async def merge_identifiers(
        self, key: str, learned: Mapping[str, str], *, now: float, ttl: float
    ) -> IdentityMerge:
        """The store's atomic identity-map merge; during an outage, the event's fields alone.

        An outage answers as a miss would (the event's fields, changed when there are any),
        counts the lost read and writes nothing.
        """
        if self._skip():
            self.lost((key,))
            return IdentityMerge.unstored(learned)
        try:
            merged = await self.store.merge_identifiers(key, learned, now=now, ttl=ttl)
        except self._errors as exc:
            self._failed(exc)
            self.lost((key,))
            return IdentityMerge.unstored(learned)
        self._succeeded()
        return merged

    async def keep_newer(
        self, key: str, value: bytes, at: float, ttl: float, *, now: float
    ) -> bytes | None:
        """The store's atomic "keep the newer entry"; during an outage, ``CacheUnavailable``.

        Unlike every other call this one does not answer an outage as a miss: its answer
        says which entry is in force, and "``value``" would be untrue when nothing was
        written (and a read made now would find the older entry, or nothing). It counts
        the lost read and raises; a caller that can do without the write catches it.

        Raises:
            CacheUnavailable: The store is unreachable (or was, under ``retry_interval``
                ago): the write is not known to have landed (none did when the store was
                skipped or refused the connection; after a timeout it may have). Its
                ``retry_after`` is the retry interval.
        """
        if self._skip():
            self.lost((key,))
            raise self._unavailable()
        try:
            newer = await self.store.keep_newer(key, value, at, ttl, now=now)
        except self._errors as exc:
            self._failed(exc)
            self.lost((key,))
            # Not chained: the store's error is logged (redis_failure), never passed on.
            raise self._unavailable() from None
        self._succeeded()
        return newer

    def _unavailable(self) -> CacheUnavailable:
        seconds = f"{self._retry_interval:g}"
        return CacheUnavailable(
            f"the cache did not answer, so the write is not known to have landed; retry in "
            f"{seconds} s",
            retry_after=self._retry_interval,
            metadata={"retry_after_seconds": seconds},
        )

    async def close(self) -> None:
        """Release the store's connections."""
        try:
            await self.store.close()
        except self._errors as exc:
            self._logger.debug("closing the cache failed (%s)", type(exc).__name__)


def build_cache(
    settings: CacheSettings,
    metrics: Metrics,
    *,
    clock: Callable[[], float] = time.monotonic,
    redis_timeout: float = REDIS_SECONDS,
) -> CacheBackend:
    """The cache the settings ask for: the bounded memory LRU, or Redis at ``redis_url``.

    Args:
        settings: The ``[cache]`` table.
        metrics: The service's metrics.
        clock: Monotonic seconds (memory TTLs and the outage retry interval).
        redis_timeout: Seconds Redis gets to connect or answer before it counts as down
            (the tests' is longer: on a loaded machine a process may wait that long for CPU).

    Returns:
        A ``CacheBackend``; for Redis no connection is made until the first call.
    """
    if settings.backend == "redis":
        return CacheBackend(
            RedisStore.from_url(settings.redis_url, timeout=redis_timeout),
            metrics=metrics,
            clock=clock,
            unavailable_errors=(RedisError, OSError),
        )
    return CacheBackend(
        MemoryStore(settings.max_entries, max_bytes=settings.max_bytes, clock=clock),
        metrics=metrics,
        clock=clock,
    )
