"""The ports the enrichment use case depends on, as Protocols.

``ProfileClient`` is what ``amperity_signal.amperity`` provides; ``ProfileLike`` is the part
of its ``Profile`` this package reads. Defining them here keeps ``enrich`` independent of
the client's module layout and lets tests pass a small counting fake.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from amperity_signal.enrich.identity_entry import IdentityMerge


class ProfileLike(Protocol):
    """The fields of an Amperity profile that enrichment reads."""

    @property
    def profile_id(self) -> str:
        """The profile's id (the spec's ``amperity_id``)."""
        ...

    @property
    def attributes(self) -> Mapping[str, Any]:
        """The profile's attribute map (``Persona``, ``LifetimeTier``, ...)."""
        ...


class ProfileClient(Protocol):
    """Amperity's Profile API, as the enrichment use case calls it.

    Both methods return None on 404 and raise ``AmperityError`` subclasses otherwise
    (``AmperityAuthError`` on 401/403, ``AmperityUnavailable`` once retries ran out).
    """

    async def lookup(self, key: str, value: str, *, deadline: float | None) -> ProfileLike | None:
        """Resolve one linking key value to a profile (``POST .../keychain``)."""
        ...

    async def get_profile(
        self,
        profile_id: str,
        *,
        context: Mapping[str, str] | None = None,
        deadline: float | None,
    ) -> ProfileLike | None:
        """Fetch a profile by id, with context parameters for personalisation."""
        ...


class CacheStore(Protocol):
    """A byte-valued key/value store with per-entry TTLs (memory or Redis).

    Implementations may raise their own connection errors; ``CacheBackend`` turns those into
    a degraded, cache-less mode.
    """

    async def get(self, key: str) -> bytes | None:
        """The value stored under ``key``, or None when absent or expired."""
        ...

    async def multi_get(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values of several keys in one round trip, in order."""
        ...

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds."""
        ...

    async def delete(self, key: str) -> None:
        """Remove ``key`` if present."""
        ...

    async def merge_identifiers(
        self, key: str, learned: Mapping[str, str], *, now: float, ttl: float
    ) -> IdentityMerge:
        """Merge an event's identifiers into the identity-map entry under ``key``, atomically.

        The read, the merge rule of ``identity_entry`` and the write happen with no other
        merge of the same key in between (across processes, for a shared store).
        """
        ...

    async def keep_newer(
        self, key: str, value: bytes, at: float, ttl: float, *, now: float
    ) -> bytes | None:
        """Store ``value``, true at ``at``, unless the entry under ``key`` is newer, atomically.

        ``now`` is the writer's clock: a stored ``at`` past it counts as ``now``.

        The read, the rule of ``newer_entry`` and the write happen with no other write of
        the same key in between (across processes, for a shared store).

        Returns:
            The stored entry when it is newer and stays; None when ``value`` is in force
            (it was written, or the very same entry was stored already).

        Raises:
            CacheUnavailable: From ``CacheBackend``, when the store cannot be reached:
                nothing was written, and nothing is known to be in force.
        """
        ...

    async def copy_object(self, source: str, destination: str) -> None:
        """Store ``source``'s value under ``destination`` too, for ``source``'s remaining life.

        Only when it is a JSON object (starts with ``{``): a failure entry (a list), or no
        entry, leaves ``destination`` as it is. The read and the write happen with no other
        write of ``source`` in between (across processes, for a shared store).
        """
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
