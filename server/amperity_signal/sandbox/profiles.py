"""Live profiles of a collection: seeded from data, updated by events, stitched by identifiers.

An applied event finds every profile that already holds one of its identifiers
(:func:`amperity_signal.sandbox.identity.identifiers`). None → a new profile ``p-<12 hex>``;
one → that profile; several → they merge into the oldest, whose id survives (the merged-away
ids keep answering with the survivor). The event's identifiers are then added as links and
its aggregates applied (:mod:`amperity_signal.sandbox.rules`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from amperity_signal.sandbox.data import Collection
from amperity_signal.sandbox.identity import identifiers
from amperity_signal.sandbox.rules import ProfileStats, derive


def iso(timestamp: float) -> str:
    """An epoch time as ISO 8601 UTC with a ``Z`` (second precision, as Amperity writes it)."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Profile:
    """One profile of a collection."""

    profile_id: str
    collection_id: str
    created_at: float
    updated_at: float
    attributes: dict[str, Any]
    links: dict[str, list[str]]
    stats: ProfileStats = field(default_factory=ProfileStats)

    def to_json(self, extra_attributes: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The profile in Amperity's wire shape (lookup and get alike)."""
        return {
            "collection_id": self.collection_id,
            "profile_id": self.profile_id,
            "attributes": {**self.attributes, **(extra_attributes or {})},
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "ticked_at": iso(self.updated_at),
            "links": {key: list(values) for key, values in self.links.items()},
        }

    def add_link(self, key: str, value: str) -> None:
        """Adds an identifier to the profile's links (once)."""
        values = self.links.setdefault(key, [])
        if value not in values:
            values.append(value)


class CollectionProfiles:
    """The profiles of one collection and the index of their identifiers."""

    def __init__(self, collection: Collection, new_profile_id: Callable[[], str]) -> None:
        self._collection = collection
        self._new_profile_id = new_profile_id
        self._profiles: dict[str, Profile] = {}
        self._aliases: dict[str, str] = {}
        self._index: dict[tuple[str, str], str] = {}
        for seed in collection.profiles:
            profile = Profile(
                profile_id=seed.profile_id,
                collection_id=collection.collection_id,
                created_at=seed.created_at,
                updated_at=seed.created_at,
                attributes=dict(seed.attributes),
                links={key: list(values) for key, values in seed.links.items()},
                stats=ProfileStats.from_attributes(seed.attributes),
            )
            self._store(profile)

    @property
    def collection(self) -> Collection:
        """The collection's definition (id, name, linking keys)."""
        return self._collection

    def get(self, profile_id: str) -> Profile | None:
        """A profile by id (a merged-away id finds the profile it merged into)."""
        return self._profiles.get(self._aliases.get(profile_id, profile_id))

    def find(self, key: str, value: str) -> Profile | None:
        """The profile linked to an identifier, whatever the collection's linking keys."""
        profile_id = self._index.get((key, value))
        return None if profile_id is None else self._profiles[profile_id]

    def all(self) -> list[Profile]:
        """Every profile, oldest first."""
        return sorted(self._profiles.values(), key=lambda p: (p.created_at, p.profile_id))

    def apply(self, event: Mapping[str, Any], now: float) -> Profile | None:
        """Applies one accepted event; events without identifiers change nothing."""
        pairs = identifiers(event, self._collection.hashing)
        if not pairs:
            return None
        matched = {self._index[pair] for pair in pairs if pair in self._index}
        if not matched:
            profile = Profile(
                profile_id=self._new_profile_id(),
                collection_id=self._collection.collection_id,
                created_at=now,
                updated_at=now,
                attributes={},
                links={},
            )
        else:
            ordered = sorted(
                (self._profiles[i] for i in matched), key=lambda p: (p.created_at, p.profile_id)
            )
            profile = ordered[0]
            for other in ordered[1:]:
                self._merge(profile, other)
        for key, value in pairs:
            profile.add_link(key, value)
        profile.stats.record(event)
        derive(profile.stats, profile.attributes)
        profile.updated_at = now
        self._store(profile)
        return profile

    def _merge(self, survivor: Profile, other: Profile) -> None:
        del self._profiles[other.profile_id]
        for alias, target in self._aliases.items():
            if target == other.profile_id:
                self._aliases[alias] = survivor.profile_id
        self._aliases[other.profile_id] = survivor.profile_id
        for key, values in other.links.items():
            for value in values:
                survivor.add_link(key, value)
        survivor.attributes = {**other.attributes, **survivor.attributes}
        survivor.stats.absorb(other.stats)

    def _store(self, profile: Profile) -> None:
        self._profiles[profile.profile_id] = profile
        for key, values in profile.links.items():
            for value in values:
                self._index[(key, value)] = profile.profile_id
