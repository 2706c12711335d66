"""The two cache stores: a bounded in-memory LRU and Redis. Same interface, bytes in and out.

Plus three operations that are not a plain get or set, each a read-modify-write that every
store runs so that no other write of the same entry can come in between:
``merge_identifiers``, the identity map's merge (see ``identity_entry``),
``keep_newer``, the consent ledger's "keep the newer state" (see ``newer_entry``), and
``copy_object``, a personalised result made the profile's latest (``COPY_OBJECT_SCRIPT``).

aiocache 0.12's ``SimpleMemoryCache`` is unbounded and expires entries with event-loop
timers, so the memory store is written here: an ``OrderedDict`` in LRU order whose TTLs are
checked against an injectable clock (tests move a fake clock instead of sleeping).
"""

from __future__ import annotations

import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Final

import redis.asyncio as redis

from amperity_signal.enrich.expiry import expiry_ms
from amperity_signal.enrich.identity_entry import (
    MERGE_SCRIPT,
    IdentityMerge,
    merge_entry,
    script_arguments,
    script_result,
)
from amperity_signal.enrich.newer_entry import KEEP_NEWER_SCRIPT, keep_newer_entry
from amperity_signal.enrich.newer_entry import script_arguments as keep_newer_arguments
from amperity_signal.redis_client import redis_client

COPY_OBJECT_SCRIPT: Final = """
local value = redis.call('GET', KEYS[1])
if not value or string.byte(value, 1) ~= 123 then
  return 0
end
local life = redis.call('PTTL', KEYS[1])
if life <= 0 then
  return 0
end
redis.call('SET', KEYS[2], value, 'PX', life)
return 1
"""
"""``copy_object`` on Redis: KEYS[1]'s value to KEYS[2], with its remaining life, when it is a
JSON object (starts with ``{``, byte 123): never a failure entry (a list), never nothing.

A script rather than ``COPY`` (Redis 6.2+): ``COPY`` cannot look at the value, and reading it
first would leave a failure written in between to be copied."""

REDIS_SECONDS = 0.25
"""How long the service's cache waits for Redis to connect or answer before taking it for down."""


ENTRY_OVERHEAD = 300
"""The bytes an entry costs beyond its key's characters and its value's bytes, as counted
against ``max_bytes``: the key's str header, the value's bytes header, the (value, expiry)
tuple and float, and the OrderedDict's slot. Measured: RSS grew 295-303 bytes per entry
beyond key and value for 200,000 entries of 64 B to 5 KB values (docs/benchmarks.md)."""


class MemoryStore:
    """A bounded LRU store: the least recently used entries go until both bounds hold.

    Args:
        max_entries: The most entries kept (expired ones count until touched or evicted).
        max_bytes: The most bytes kept, counting each entry as its key's length, its
            value's and ``ENTRY_OVERHEAD`` (no bound by default). A value that could not
            fit alone is not stored: it would evict every other entry and still be over.
            An older value under its key goes all the same, as it would be stale.
        clock: Monotonic seconds, injectable for tests.
    """

    def __init__(
        self,
        max_entries: int,
        *,
        max_bytes: int = sys.maxsize,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        if max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._bytes = 0
        self._clock = clock
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()

    def size(self) -> int:
        """How many entries are held, expired ones included until touched or evicted.

        A method rather than ``__len__`` so an empty store is still truthy (``a or b``).
        """
        return len(self._entries)

    def held_bytes(self) -> int:
        """The bytes counted against ``max_bytes``: keys, values and ``ENTRY_OVERHEAD`` each."""
        return self._bytes

    def keys(self) -> list[str]:
        """Every stored key, least recently used first (for tests and debugging)."""
        return list(self._entries)

    def get_now(self, key: str) -> bytes | None:
        """``get`` without the coroutine: the memory store never waits (``JsonCache`` uses it)."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        value, expires_at = entry
        if self._clock() >= expires_at:
            del self._entries[key]
            self._bytes -= len(key) + len(value) + ENTRY_OVERHEAD
            return None
        self._entries.move_to_end(key)
        return value

    async def get(self, key: str) -> bytes | None:
        """The value under ``key`` unless expired; marks it recently used."""
        return self.get_now(key)

    async def multi_get(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values of several keys, in order."""
        return [self.get_now(key) for key in keys]

    def set_now(self, key: str, value: bytes, ttl: float) -> None:
        """``set`` without the coroutine: the memory store never waits."""
        # A compact copy: orjson's bytes keep their ~4 KB growth buffer in RSS (measured
        # 4.4 KB per entry instead of ~0.45 KB), so a full store took 10x its bound's worth.
        self._place(key, (bytes(memoryview(value)), self._clock() + ttl))

    def _place(self, key: str, entry: tuple[bytes, float]) -> None:
        """``entry`` under ``key``, most recently used; the least recently used go past a bound."""
        entries = self._entries
        old = entries.get(key)
        held = self._bytes
        if old is not None:
            held -= len(key) + len(old[0]) + ENTRY_OVERHEAD
        cost = len(key) + len(entry[0]) + ENTRY_OVERHEAD
        if cost > self._max_bytes:  # it would evict everything and still not fit
            if old is not None:  # nor may the older value stay in its place
                del entries[key]
                self._bytes = held
            return
        entries[key] = entry
        if old is not None:  # a new key is already the most recently used
            entries.move_to_end(key)
        held += cost
        while held > self._max_bytes or len(entries) > self._max_entries:
            evicted, (gone, _) = entries.popitem(last=False)
            held -= len(evicted) + len(gone) + ENTRY_OVERHEAD
        self._bytes = held

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        """Store ``value`` for ``ttl`` seconds; evicts the least recently used past the bound."""
        self.set_now(key, value, ttl)

    async def delete(self, key: str) -> None:
        """Remove ``key`` if present."""
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= len(key) + len(entry[0]) + ENTRY_OVERHEAD

    async def merge_identifiers(
        self, key: str, learned: Mapping[str, str], *, now: float, ttl: float
    ) -> IdentityMerge:
        """Merge an event's identifiers into the identity-map entry under ``key``.

        Atomic: this store's ``get`` and ``set`` never wait, so no other coroutine runs
        between the read and the write. They are called (not bypassed) so that a subclass
        wrapping them, as the tests' failing and counting stores do, sees the merge too.

        Args:
            key: The entry's key.
            learned: The fields the event teaches (empty: only renew when due).
            now: Wall-clock epoch seconds (renewal times are shared across processes).
            ttl: The TTL a write gives the entry.
        """
        result, entry = merge_entry(await self.get(key), learned, now=now, ttl=ttl)
        if entry is not None:
            await self.set(key, entry, ttl)
        return result

    def merge_identifiers_now(
        self, key: str, learned: Mapping[str, str], *, now: float, ttl: float
    ) -> IdentityMerge:
        """``merge_identifiers`` without the coroutine (``JsonCache`` uses it, as ``get_now``)."""
        result, entry = merge_entry(self.get_now(key), learned, now=now, ttl=ttl)
        if entry is not None:
            self.set_now(key, entry, ttl)
        return result

    async def keep_newer(
        self, key: str, value: bytes, at: float, ttl: float, *, now: float
    ) -> bytes | None:
        """Store ``value`` (true at ``at``) unless the entry under ``key`` is newer.

        Atomic, as ``merge_identifiers`` is, and through ``get`` and ``set`` for the same
        reason.

        Args:
            key: The entry's key.
            value: A JSON object whose ``at`` is ``at`` (see ``newer_entry``).
            at: When ``value`` was true, in epoch seconds.
            ttl: The TTL a write gives the entry.
            now: The writer's clock, in epoch seconds (a stored ``at`` past it counts as it).

        Returns:
            The stored entry when it is newer and stays; None when ``value`` is in force.
        """
        newer, write = keep_newer_entry(await self.get(key), value, at, now)
        if write:
            await self.set(key, value, ttl)
        return newer

    def keep_newer_now(
        self, key: str, value: bytes, at: float, ttl: float, *, now: float
    ) -> bytes | None:
        """``keep_newer`` without the coroutine (the consent ledger uses it, as ``get_now``)."""
        newer, write = keep_newer_entry(self.get_now(key), value, at, now)
        if write:
            self.set_now(key, value, ttl)
        return newer

    def get_copying_now(self, key: str, destination: str) -> bytes | None:
        """``get_now``, and a JSON object found is ``destination``'s too (``copy_object``).

        One call for both: ``JsonCache.get_as_latest`` makes it on every personalised hit.
        """
        value = self.get_now(key)
        if value is not None and value[:1] == b"{":
            entry = self._entries[key]
            if self._entries.get(destination) is not entry:
                # The very entry (bytes and expiry), not a copy: the source's remaining life.
                # Counted as its own against max_bytes (the bytes are shared: an over-count).
                self._place(destination, entry)
        return value

    async def copy_object(self, source: str, destination: str) -> None:
        """Store ``source``'s value under ``destination`` too, until ``source`` expires.

        Only a JSON object (a value starting with ``{``): a failure entry (a list) or an
        absent or expired ``source`` leaves ``destination`` as it is.
        """
        self.get_copying_now(source, destination)

    async def close(self) -> None:
        """Drop every entry."""
        self._entries.clear()
        self._bytes = 0


class RedisStore:
    """Redis through ``redis.asyncio``, with short timeouts and one reconnect at most.

    A cache that cannot answer within a quarter of a second is worth less than no cache:
    the caller degrades to cache-less enrichment instead of waiting, so a timeout is never
    retried. A connection error is retried once, on a fresh connection (``redis_client``):
    after a Redis restart every pooled connection is dead, and without it the first
    command on each would fail and the cache be skipped for a second although Redis is back.

    Args:
        client: A ``redis.asyncio.Redis`` (``decode_responses=False``).
    """

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        # EVALSHA by the script's digest; on NOSCRIPT (a restarted or flushed Redis) the
        # script object loads the script and runs it again, in the same call.
        self._merge_script = client.register_script(MERGE_SCRIPT)
        self._keep_newer_script = client.register_script(KEEP_NEWER_SCRIPT)
        self._copy_object_script = client.register_script(COPY_OBJECT_SCRIPT)

    @classmethod
    def from_url(cls, url: str, *, timeout: float = REDIS_SECONDS) -> RedisStore:
        """A store for ``redis://host:port/db`` (or ``rediss://``, ``unix://``) URLs."""
        return cls(redis_client(url, timeout=timeout))

    async def get(self, key: str) -> bytes | None:
        """The value under ``key``, or None."""
        return _as_bytes(await self._client.get(key))

    async def multi_get(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values of several keys in one ``MGET``."""
        if not keys:
            return []
        return [_as_bytes(value) for value in await self._client.mget(list(keys))]

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        """``SET key value PX ttl`` (at least one millisecond, at most ``MAX_EXPIRY_MS``)."""
        await self._client.set(key, value, px=expiry_ms(ttl))

    async def delete(self, key: str) -> None:
        """``DEL key``."""
        await self._client.delete(key)

    async def merge_identifiers(
        self, key: str, learned: Mapping[str, str], *, now: float, ttl: float
    ) -> IdentityMerge:
        """The identity map's merge: a ``GET``, then, only when it must write, one ``EVALSHA``.

        Most events of a known visitor teach nothing new and the entry is not due for
        renewal: the ``GET`` alone answers them, as cheaply as a plain read (the script
        costs ~30 us more client CPU and ~12 us of Redis CPU per call). When the merge
        must write, the script redoes it inside Redis, atomically, against the entry as it
        is then: two replicas (or two events of one visitor) merging at once both land. A
        merge answered by the ``GET`` alone is ordered at that read, before any merge that
        wrote after it.

        Running the script twice is harmless to the entry: a connection error is retried
        once, and when only the reply was lost the first run had taken effect, so the
        second finds its fields already there and reports them unchanged, found. The
        answer is therefore taken relative to the ``GET``: ``found`` is what the ``GET``
        found, and ``changed`` is the ``GET``'s prediction when the script left exactly
        the fields predicted (nothing but this merge, or an identical one, came in
        between), else the script's own. Without that, an event that taught the map a new
        email answered "unchanged" and its lookup counted as a hit.
        Arguments as for ``MemoryStore.merge_identifiers``.
        """
        predicted, entry = merge_entry(
            _as_bytes(await self._client.get(key)), learned, now=now, ttl=ttl
        )
        if entry is None:
            return predicted
        reply = await self._merge_script(
            keys=[key], args=script_arguments(learned, now=now, ttl=ttl)
        )
        merged = script_result(_as_bytes(reply) or b"")
        as_predicted = predicted.changed and merged.fields == predicted.fields
        return merged._replace(changed=merged.changed or as_predicted, found=predicted.found)

    async def keep_newer(
        self, key: str, value: bytes, at: float, ttl: float, *, now: float
    ) -> bytes | None:
        """The consent ledger's "keep the newer state": one ``EVALSHA``, read and write in it.

        Unlike ``merge_identifiers`` there is no plain ``GET`` first: its common case writes.
        A consenting visitor's every event carries the same state with a newer ``at``, and
        ``at`` must advance (see ``ConsentLedger``), so a ``GET`` first would answer alone
        only retried or late events and add a round trip to all the others (measured: two
        round trips and ~245 us of client CPU per event against one and ~150 us; the old
        ``GET`` and ``SET`` took two and ~200 us; docs/benchmarks.md). Running the script
        twice is harmless (a connection error is retried once, maybe after the first run
        took effect): the second run finds the same bytes stored and writes nothing.
        Arguments and answer as for ``MemoryStore.keep_newer``.
        """
        arguments = keep_newer_arguments(value, at, ttl, now)
        reply = await self._keep_newer_script(keys=[key], args=arguments)
        return _as_bytes(reply) or None

    async def copy_object(self, source: str, destination: str) -> None:
        """``MemoryStore.copy_object`` as one ``EVALSHA`` of ``COPY_OBJECT_SCRIPT``.

        Atomic: a failure entry written over ``source`` since the caller read it is not
        copied. Running it twice (a connection error is retried once) copies the same.
        """
        await self._copy_object_script(keys=[source, destination])

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()


def _as_bytes(value: bytes | str | None) -> bytes | None:
    """Redis answers bytes (``decode_responses=False``); a str from another client is encoded."""
    return value.encode() if isinstance(value, str) else value
