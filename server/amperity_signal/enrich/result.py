"""``EnrichResult``: what one enrichment produced, and the event with it attached."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from amperity_signal.enrich.resolution import CacheStatus


class EnrichResult(NamedTuple):
    """The result of ``Enricher.enrich`` (a NamedTuple: one is built per Enrich and Deliver).

    Attributes:
        resolved: Whether the visitor resolved to an Amperity profile.
        amperity_id: The profile id, when resolved.
        matched_key: The linking key that matched, when resolved.
        attributes: The profile's attributes (``partner_attrs.amperity``), possibly stale.
        personalized_attributes: Context-sensitive attributes (``amperity_personalized``).
        cache_status: hit, miss, stale, dampened or disabled.
        warnings: What went wrong and how to fix it (``partner resolve failed: ...``).
        event: A shallow copy of the event with ``partner_attrs`` and ``amperity_id`` set.
    """

    resolved: bool
    amperity_id: str | None
    matched_key: str | None
    attributes: dict[str, Any]
    personalized_attributes: dict[str, Any]
    cache_status: CacheStatus
    warnings: tuple[str, ...]
    event: dict[str, Any]


def attach(
    event: Mapping[str, Any],
    amperity_id: str | None,
    attributes: Mapping[str, Any] | None,
    personalized: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A shallow copy of the event with the enrichment attached; the input is not changed.

    ``partner_attrs.amperity`` is set only when attributes were obtained, and
    ``partner_attrs.amperity_personalized`` only when non-empty.
    """
    enriched = dict(event)
    existing = event.get("partner_attrs")
    partner_attrs = dict(existing) if isinstance(existing, Mapping) else {}
    if attributes is not None:
        partner_attrs["amperity"] = dict(attributes)
    if personalized:
        partner_attrs["amperity_personalized"] = dict(personalized)
    if partner_attrs or existing is not None:
        enriched["partner_attrs"] = partner_attrs
    if amperity_id is not None:
        enriched["amperity_id"] = amperity_id
    return enriched


def with_personalized(enriched: dict[str, Any], personalized: Mapping[str, Any]) -> None:
    """Add ``partner_attrs.amperity_personalized`` to an ``attach`` result, in place.

    The same as attaching again with ``personalized`` (``attach`` gave ``enriched`` its own
    ``partner_attrs`` dict), without copying the event a second time.
    """
    if personalized:
        partner_attrs = enriched.get("partner_attrs")
        if not isinstance(partner_attrs, dict):
            partner_attrs = enriched["partner_attrs"] = {}
        partner_attrs["amperity_personalized"] = dict(personalized)
