"""``JsonCache``: JSON values over the byte-level cache, with hit/miss metrics per kind."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from amperity_signal.enrich.cache import CacheBackend
from amperity_signal.enrich.identity_entry import IdentityMerge
from amperity_signal.enrich.keys import kind_of
from amperity_signal.enrich.stores import MemoryStore
from amperity_signal.metrics import Increments, Metrics

_DIGEST_TAIL = re.compile(r":[0-9a-f]{64}")
"""How every ``cache_key`` ends: the digest behind the kind."""


class JsonCache:
    """What enrichment reads and writes: JSON-serialisable values under ``cache_key`` keys.

    Values are serialised for the memory store too, so both backends behave the same (a
    cached dict is never shared with, or changed by, a caller).

    Args:
        backend: The outage-tolerant byte cache.
        metrics: ``cache_events{cache=kind, result=hit|miss}``.
    """

    def __init__(self, backend: CacheBackend, metrics: Metrics) -> None:
        self.backend = backend
        # The memory store answers at once: reading (and merging into) it directly spares
        # two coroutines per call, and it cannot fail, so the backend's outage handling has
        # nothing to do. (Exactly MemoryStore: a subclass may override get, as the outage
        # tests do.)
        store = backend.store
        self._get_now: Callable[[str], bytes | None] | None = None
        self._merge_now: Callable[..., IdentityMerge] | None = None
        self._get_copying_now: Callable[[str, str], bytes | None] | None = None
        if type(store) is MemoryStore:
            self._get_now = store.get_now
            self._merge_now = store.merge_identifiers_now
            self._get_copying_now = store.get_copying_now
        self.answers_now = self._get_now is not None
        """Whether reads are answered without a round trip (the memory store)."""
        self._metrics = metrics
        self._counters: dict[str, tuple[Increments, Increments]] = {}

    def _count(self, key: str, hit: bool) -> None:
        """Count a read of ``key`` as a hit or a miss of its kind."""
        # Keys of one kind share everything before their 64-hex digest: the (miss, hit)
        # counters are found by that prefix, without parsing the key on every read.
        counters = self._counters.get(key[:-64])
        if counters is None:
            events, kind = self._metrics.cache_events, kind_of(key)
            counters = (events.tally(kind, "miss"), events.tally(kind, "hit"))
            if _DIGEST_TAIL.fullmatch(key[-65:]):
                self._counters[key[:-64]] = counters
        counters[hit].inc()

    @property
    def available(self) -> bool:
        """Whether the backend is answering (False during an outage)."""
        return self.backend.available

    async def get(self, key: str, *, count: bool = True) -> Any | None:
        """The decoded value under ``key``, or None.

        ``count=False`` for a re-read of a key this request already counted, so the hit
        ratio counts each request's lookup once, and an outage each lost read once.
        """
        get_now = self._get_now
        if get_now is not None:  # the memory store, which is never unavailable
            item = get_now(key)
            if count:
                self._count(key, item is not None)
        else:
            item = await self.backend.get(key, counted=count)
            if count and self.backend.available:  # during an outage the backend counted
                self._count(key, item is not None)
        return None if item is None else orjson.loads(item)

    def stored_now(self, key: str) -> bytes | None:
        """The bytes the memory store holds under ``key``, never counted (``Gate``).

        Only while ``answers_now``: another store's read is a round trip, to be made with
        the caller's others (``read_ahead``).
        """
        get_now = self._get_now
        if get_now is None:
            raise RuntimeError("stored_now reads the memory store only; use read_ahead")
        return get_now(key)

    async def get_many(self, keys: Sequence[str], *, count: bool = True) -> list[Any | None]:
        """The decoded values of several keys in one round trip (``count`` as for ``get``)."""
        if len(keys) == 1:  # most visitors have one candidate: the single read is cheaper
            return [await self.get(keys[0], count=count)]
        raw = await self.backend.multi_get(keys, counted=None if count else 0)
        # During an outage the backend counted errors (unless ``count`` is false).
        counted = count and self.backend.available
        values: list[Any | None] = []
        for key, item in zip(keys, raw, strict=True):
            if counted:
                self._count(key, item is not None)
            values.append(None if item is None else orjson.loads(item))
        return values

    async def get_with(
        self, key: str, other: str | None, *, count: bool = True
    ) -> tuple[Any | None, bytes | None]:
        """``key``'s decoded value and ``other``'s stored bytes, read in one round trip.

        On Redis one ``MGET`` instead of two ``GET``s (``other`` None: ``key`` alone, as
        ``get``). Only ``key``'s read is counted (``count`` as for ``get``; during an outage
        ``key``'s lost read alone): ``other``'s is counted by ``decode``, when the caller
        uses it, so a read the caller throws away (and makes again later) counts once.
        """
        get_now = self._get_now
        if get_now is not None:  # the memory store, which is never unavailable
            item = get_now(key)
            extra = None if other is None else get_now(other)
            if count:
                self._count(key, item is not None)
        else:
            if other is None:
                item, extra = await self.backend.get(key, counted=count), None
            else:
                item, extra = await self.backend.multi_get((key, other), counted=int(count))
            if count and self.backend.available:  # during an outage the backend counted
                self._count(key, item is not None)
        return None if item is None else orjson.loads(item), extra

    async def get_as_latest(self, key: str, latest: str) -> Any | None:
        """``key``'s decoded value (counted, as ``get``); a JSON object found is ``latest``'s too.

        For a cache whose every hit is also the newest answer of its kind (a personalised
        result, the browser's ``perslast``): ``copy_object``, so ``latest`` holds the
        entry's bytes for its remaining life. A failure entry (a list) is never copied. On
        Redis ``latest`` is read with ``key``, in one ``MGET``, and the copy (one
        ``EVALSHA``, a second round trip) made only when it holds other bytes: most hits
        repeat the latest context and cost one round trip, as a ``GET`` did. ``latest``'s
        read is not counted (it is no lookup). During an outage the hit is a miss (counted
        once) and nothing is copied.
        """
        get_copying_now = self._get_copying_now
        if get_copying_now is not None:  # the memory store
            item = get_copying_now(key, latest)
            self._count(key, item is not None)
            return None if item is None else orjson.loads(item)
        item, stored = await self.backend.multi_get((key, latest), counted=1)
        if not self.backend.available:  # the backend counted the lost read
            return None
        self._count(key, item is not None)
        if item is None:
            return None
        if item[:1] == b"{" and stored != item:
            await self.backend.copy_object(key, latest)
        return orjson.loads(item)

    async def read_ahead(self, keys: Sequence[str]) -> list[bytes | None]:
        """The stored bytes of ``keys``, read in one round trip, none of them counted yet.

        For a caller that reads, with the entry it needs first, entries it needs next
        unless that first one says otherwise: on Redis one ``MGET`` instead of two round
        trips. Each entry is counted when the caller uses it (``decode``, ``decode_ahead``)
        and one it never uses never is; during an outage the round trip counts the first
        key's lost read alone, the one read every caller uses, as a read of it alone would.
        """
        if len(keys) == 1:  # nothing ahead: the single read is cheaper
            return [await self.backend.get(keys[0])]
        return await self.backend.multi_get(keys, counted=1)

    def decode_ahead(self, keys: Sequence[str], items: Sequence[bytes | None]) -> list[Any | None]:
        """The decoded values ``read_ahead`` read for ``keys``, counted now, as read now.

        Each is counted as a hit or a miss; while the backend is unavailable (also when it
        became so after the read) as a lost read, and answered as None, as a read made now
        would be.
        """
        if not self.backend.available:
            return self.backend.lost(keys)
        values: list[Any | None] = []
        for key, item in zip(keys, items, strict=True):
            self._count(key, item is not None)
            values.append(None if item is None else orjson.loads(item))
        return values

    def decode(self, key: str, item: bytes | None, *, count: bool = True) -> Any | None:
        """The decoded value of ``item``, read from ``key`` by ``get_with`` or ``read_ahead``.

        Counted now, unless the backend is unavailable: a lost read is counted by the read.
        """
        if count and self.backend.available:
            self._count(key, item is not None)
        return None if item is None else orjson.loads(item)

    async def set(self, key: str, value: Any, ttl: float) -> None:
        """Store a JSON-serialisable value for ``ttl`` seconds."""
        await self.backend.set(key, orjson.dumps(value), ttl)

    async def delete(self, key: str) -> None:
        """Remove ``key``."""
        await self.backend.delete(key)

    async def merge_identifiers(
        self,
        key: str,
        learned: Mapping[str, str],
        *,
        now: float,
        ttl: float,
        count: bool = True,
    ) -> IdentityMerge:
        """The backend's atomic identity-map merge, its read counted as a hit or a miss.

        ``count`` as for ``get``.
        """
        merge_now = self._merge_now
        if merge_now is not None:
            merged = merge_now(key, learned, now=now, ttl=ttl)
        else:
            merged = await self.backend.merge_identifiers(key, learned, now=now, ttl=ttl)
        if count and self.backend.available:  # during an outage the backend counted errors
            self._count(key, merged.found)
        return merged


def failure_entry(reason: str, message: str | None) -> list[Any]:
    """A failed attribute or personalised call, as cached for ``error_ttl``.

    A list, which the attributes cached under the same key never are.
    """
    return ["error", reason, message]


def read_failure(entry: Any) -> tuple[str, Any] | None:
    """The ``(reason, message)`` of a ``failure_entry``, or None for anything else."""
    if isinstance(entry, list) and len(entry) == 3 and entry[0] == "error":
        return str(entry[1]), entry[2]
    return None
