"""The identity map: identifiers learned from events, remembered per anonymous id.

An identify (or any event carrying ``traits.email``, ``traits.phone`` or ``user_id``) for
anonymous id X teaches the map those identifiers, so later events and browser calls for X,
which carry only the cookie, still resolve through email or customer id. Values are stored
already prepared for the integration's linking keys (hashed where configured), under a key
that is a digest of the anonymous id.

An entry lives ``identity_ttl`` seconds after it was last *used*, so a visitor active every
day keeps their identity. Rewriting it on every read would cost a cache write per event,
so the entry carries the wall-clock time after which less than half its TTL remains
(``RENEW_AFTER``): only a read past that time rewrites it, with a full TTL. Wall-clock,
because Redis entries are shared by processes whose monotonic clocks differ.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from amperity_signal.config import LinkingKey
from amperity_signal.enrich.codec import JsonCache
from amperity_signal.enrich.identifiers import learnable, visitor_id
from amperity_signal.enrich.keys import cache_key

RENEW_AFTER: Final = "~renew_after"
"""The entry's field holding when a read should rewrite it (epoch seconds).

No identifier field can take this name: they are named after linking-key sources.
"""


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
    def _key(integration_id: str, anonymous_id: str) -> str:
        return cache_key("ident", integration_id, "anonymous_id", anonymous_id)

    async def identifiers(self, integration_id: str, anonymous_id: str) -> dict[str, str]:
        """The fields remembered for a visitor (``email:sha256`` → digest, ...), or {}.

        Reading an entry is using it: past half its TTL, it is rewritten with a full one.
        """
        key = self._key(integration_id, anonymous_id)
        found, renew = self._decoded(await self._cache.get(key))
        if renew and found:
            await self._write(key, found)
        return found

    def _decoded(self, stored: Any) -> tuple[dict[str, str], bool]:
        """The fields of a stored entry, and whether it is due to be rewritten.

        Not a coroutine: a read stays one await, the cache's.
        """
        if not isinstance(stored, dict):
            return {}, False
        renew_after = stored.pop(RENEW_AFTER, None)
        found = {str(k): str(v) for k, v in stored.items()}
        # An entry written before renewal existed has no time: rewritten once, at its next use.
        due = not isinstance(renew_after, int | float) or self._wall_clock() >= renew_after
        return found, due

    async def _write(self, key: str, fields: Mapping[str, str]) -> None:
        """Store ``fields`` for a (jittered) full TTL, to be renewed once half of it passed."""
        ttl = self._expiry(self._ttl)
        entry = {**fields, RENEW_AFTER: self._wall_clock() + ttl / 2}
        await self._cache.set(key, entry, ttl)

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
        *,
        learned: Mapping[str, str] | None = None,
    ) -> tuple[dict[str, str], bool]:
        """Like ``remember``, also returning the visitor's fields after the merge.

        The event's identifiers win over remembered ones. When one of them differs from
        the remembered value (another user logged in on the same browser, or a new email),
        the remembered identifiers the event does not carry are forgotten too: they may
        belong to the previous user, whose profile would otherwise match first (email is
        usually the first linking key) and be shown to the new one. The entry is written
        only when it changed, or when it is due to be renewed (see ``identifiers``).
        ``learned`` is ``learnable(linking_keys, event)`` when the caller already has it
        (hashing is not free).
        """
        anonymous_id = visitor_id(event)
        if anonymous_id is None:
            return {}, False
        key = self._key(integration_id, anonymous_id)
        # Read, merge, write: with the memory store nothing here yields to the event loop
        # (JsonCache reads it synchronously and its writes never wait), so two merges of one
        # visitor cannot interleave. With Redis they can, across processes and across the
        # awaits of one process: one of two concurrent changes may be lost (an atomic merge
        # would be a Lua script doing this read-merge-write inside Redis).
        current, renew = self._decoded(await self._cache.get(key))
        if learned is None:
            learned = learnable(linking_keys, event)
        someone_else = any(current.get(name, value) != value for name, value in learned.items())
        merged = dict(learned) if someone_else else {**current, **learned}
        changed = merged != current
        if changed or (renew and merged):
            await self._write(key, merged)
        return merged, changed
