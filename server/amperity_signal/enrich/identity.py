"""The identity map: identifiers learned from events, remembered per anonymous id.

An identify (or any event carrying ``traits.email``, ``traits.phone`` or ``user_id``) for
anonymous id X teaches the map those identifiers, so later events and browser calls for X,
which carry only the cookie, still resolve through email or customer id. Values are stored
already prepared for the integration's linking keys (hashed where configured), under a key
that is a digest of the anonymous id, for ``identity_ttl`` seconds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from amperity_signal.config import LinkingKey
from amperity_signal.enrich.codec import JsonCache
from amperity_signal.enrich.identifiers import learnable, visitor_id
from amperity_signal.enrich.keys import cache_key


class IdentityMap:
    """Per-integration, per-anonymous-id identifiers in the shared cache.

    Args:
        cache: The cache backend (memory or Redis).
        ttl: Seconds an entry lives after its last change (``identity_ttl``).
        expiry: Applies jitter to a TTL.
    """

    def __init__(self, cache: JsonCache, *, ttl: float, expiry: Callable[[float], float]) -> None:
        self._cache = cache
        self._ttl = ttl
        self._expiry = expiry

    @staticmethod
    def _key(integration_id: str, anonymous_id: str) -> str:
        return cache_key("ident", integration_id, "anonymous_id", anonymous_id)

    async def identifiers(self, integration_id: str, anonymous_id: str) -> dict[str, str]:
        """The fields remembered for a visitor (``email:sha256`` → digest, ...), or {}."""
        stored = await self._cache.get(self._key(integration_id, anonymous_id))
        if not isinstance(stored, dict):
            return {}
        return {str(k): str(v) for k, v in stored.items()}

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
        only when it changed. ``learned`` is ``learnable(linking_keys, event)`` when the
        caller already has it (hashing is not free).
        """
        anonymous_id = visitor_id(event)
        if anonymous_id is None:
            return {}, False
        current = await self.identifiers(integration_id, anonymous_id)
        if learned is None:
            learned = learnable(linking_keys, event)
        someone_else = any(current.get(name, value) != value for name, value in learned.items())
        merged = dict(learned) if someone_else else {**current, **learned}
        if merged == current:
            return current, False
        await self._cache.set(
            self._key(integration_id, anonymous_id), merged, self._expiry(self._ttl)
        )
        return merged, True
