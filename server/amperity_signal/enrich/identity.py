"""The identity map: identifiers learned from events, remembered per anonymous id.

An identify (or any event carrying an email, a phone or a user id, read where
``identifiers.SOURCE_PATHS`` says: ``traits.email``, ``properties.email``...) for
anonymous id X teaches the map those identifiers, so later events and browser calls for X,
which carry only the cookie, still resolve through email or customer id. Values are stored
already prepared for the integration's linking keys (hashed where configured), under a key
that is a digest of the anonymous id.

An entry lives ``identity_ttl`` seconds after it was last *used*, so a visitor active every
day keeps their identity. Rewriting it on every read would cost a cache write per event,
so the entry carries the wall-clock time after which less than half its TTL remains
(``RENEW_AFTER``): only a use past that time rewrites it, with a full TTL. Wall-clock,
because Redis entries are shared by processes whose monotonic clocks differ.

Every write goes through the store's atomic ``merge_identifiers`` (one Lua script with
Redis), so two replicas, or two concurrent events of one visitor, never write over each
other's identifiers; a read is a plain GET, and a renewal it triggers is a merge of
nothing, which keeps whatever the entry holds by then.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from amperity_signal.config import LinkingKey
from amperity_signal.enrich.codec import JsonCache
from amperity_signal.enrich.identifiers import learnable, visitor_id
from amperity_signal.enrich.identity_entry import RENEW_AFTER, is_due, read_entry
from amperity_signal.enrich.keys import cache_key

__all__ = ["RENEW_AFTER", "IdentityMap"]


class IdentityMap:
    """Per-integration, per-anonymous-id identifiers in the shared cache.

    Args:
        cache: The cache backend (memory or Redis).
        ttl: Seconds an entry lives after its last use (``identity_ttl``).
        expiry: Applies jitter to a TTL.
        wall_clock: Epoch seconds (tests pass a fake clock).
    """

    def __init__(
        self,
        cache: JsonCache,
        *,
        ttl: float,
        expiry: Callable[[float], float],
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._cache = cache
        self._ttl = ttl
        self._expiry = expiry
        self._wall_clock = wall_clock

    @staticmethod
    def entry_key(integration_id: str, anonymous_id: str) -> str:
        """The cache key of a visitor's entry (for a caller reading it with other entries)."""
        return cache_key("ident", integration_id, "anonymous_id", anonymous_id)

    async def identifiers(self, integration_id: str, anonymous_id: str) -> dict[str, str]:
        """The fields remembered for a visitor (``email:sha256`` → digest, ...), or {}.

        Reading an entry is using it: past half its TTL, it is rewritten with a full one.
        """
        key = self.entry_key(integration_id, anonymous_id)
        found, renew_after = read_entry(await self._cache.get(key))
        if found and is_due(renew_after, self._wall_clock()):
            await self._renew(key)
        return found

    async def identifiers_in(self, key: str, stored: bytes | None) -> dict[str, str]:
        """``identifiers`` from the entry a caller read under ``key`` (``entry_key``).

        For the page, which reads the entry with the entries it needs next
        (``JsonCache.read_ahead``): the entry is counted, and renewed when due, now.
        """
        found, renew_after = read_entry(self._cache.decode(key, stored))
        if found and is_due(renew_after, self._wall_clock()):
            await self._renew(key)
        return found

    async def _renew(self, key: str) -> None:
        """Give a used entry a full TTL again."""
        # A merge of nothing: renews the entry as Redis holds it by then, so a field
        # another replica merged since this read is kept (a SET of ``found`` lost it).
        await self._cache.merge_identifiers(
            key, {}, now=self._wall_clock(), ttl=self._expiry(self._ttl), count=False
        )

    async def remember(
        self,
        integration_id: str,
        event: Mapping[str, Any],
        linking_keys: Sequence[LinkingKey],
    ) -> bool:
        """Learn the identifiers an event carries for its anonymous id.

        Args:
            integration_id: The integration the map belongs to.
            event: The event dict (``anonymous_id``, ``user_id``, ``traits``...).
            linking_keys: The integration's linking keys, which decide the stored forms.

        Returns:
            True when the map changed (and was written).
        """
        _, changed = await self.merge(integration_id, event, linking_keys)
        return changed

    async def merge(
        self,
        integration_id: str,
        event: Mapping[str, Any],
        linking_keys: Sequence[LinkingKey],
    ) -> tuple[dict[str, str], bool]:
        """Like ``remember``, also returning the visitor's fields after the merge.

        The event's identifiers win over remembered ones. When one of them differs from
        the remembered value (another user logged in on the same browser, or a new email),
        the remembered identifiers the event does not carry are forgotten too: they may
        belong to the previous user, whose profile would otherwise match first (email is
        usually the first linking key) and be shown to the new one. The entry is written
        only when it changed, or when it is due to be renewed (see ``identifiers``), and
        the whole read-merge-write is one atomic store operation (``merge_identifiers``).
        A caller that has read the event's identifiers already calls ``learn``.
        """
        anonymous_id = visitor_id(event)
        if anonymous_id is None:
            return {}, False
        return await self.learn(integration_id, anonymous_id, learnable(linking_keys, event))

    async def learn(
        self, integration_id: str, anonymous_id: str, learned: Mapping[str, str]
    ) -> tuple[dict[str, str], bool]:
        """``merge`` with what the caller already read from the event.

        ``anonymous_id`` is its ``visitor_id``, ``learned`` its ``learnable`` fields
        (``read_identifiers`` gives both).
        """
        key = self.entry_key(integration_id, anonymous_id)
        merged = await self._cache.merge_identifiers(
            key, learned, now=self._wall_clock(), ttl=self._expiry(self._ttl)
        )
        return merged.fields, merged.changed
