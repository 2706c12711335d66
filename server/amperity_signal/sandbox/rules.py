"""How events change a profile's attributes: aggregates and the seed rules.

Aggregates, always maintained: ``EventCount``, ``LastEventType``, ``OrderCount`` and
``LifetimeOrderValue`` (sum of ``value`` or ``revenue`` of purchase events).

Derived attributes (recomputed after every applied event; a rule without evidence keeps the
attribute already there, so seeded values survive until events say otherwise):

- ``LifetimeTier``: Bronze below 250 (negative values, i.e. refunds, included), Silver from
  250, Gold from 1000, Platinum from 5000 (on ``LifetimeOrderValue``).
- ``Persona``, first rule that holds: lifetime value of 2000 or more → "Loyal Big Spender";
  purchases of which any used a ``coupon`` or at least half were under 50 → "Value Hunter";
  no purchase and 3 or more browsing events (view_item, view_item_list, add_to_cart,
  view_cart) → "Window Shopper".
- ``FavoriteBrand``: the most frequent ``item_brand``/``brand`` among events; a seeded
  FavoriteBrand counts as one event of that brand and wins ties.

Context-dependent attributes (profile GET with ``enrich=true`` plus context parameters):

- ``RecommendedCategory``: ``pageCategory`` when given, else by Persona (Window Shopper →
  "new-arrivals", Value Hunter → "sale", Loyal Big Spender → "premium", else "bestsellers").
- ``NextBestOffer``: ``cartValue`` ≥ 100 → "free-shipping"; else ``pageCategory`` X →
  "X-10-off"; else Value Hunter → "coupon-15-off"; else "newsletter-signup".
- ``HeroVariant``: by ``tierHint`` or else ``LifetimeTier``: Platinum/Gold → "hero-premium",
  Silver → "hero-standard", otherwise "hero-welcome".
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

TIER_THRESHOLDS: tuple[tuple[float, str], ...] = (
    (5000.0, "Platinum"),
    (1000.0, "Gold"),
    (250.0, "Silver"),
    (0.0, "Bronze"),
)
BIG_SPENDER_VALUE = 2000.0
LOW_ORDER_VALUE = 50.0
FREE_SHIPPING_CART_VALUE = 100.0
PURCHASE_TYPES = frozenset(
    {"purchase", "order_completed", "Order Completed", "booking_completed", "item_purchased"}
)
BROWSE_TYPES = frozenset(
    {"view_item", "view_item_list", "add_to_cart", "view_cart", "Product Viewed", "Product Added"}
)


@dataclass
class ProfileStats:
    """What the rules need to know about the events a profile has seen."""

    event_count: int = 0
    order_count: int = 0
    lifetime_value: float = 0.0
    browse_count: int = 0
    coupon_orders: int = 0
    low_value_orders: int = 0
    last_event_type: str | None = None
    brands: Counter[str] = field(default_factory=Counter)

    @classmethod
    def from_attributes(cls, attributes: Mapping[str, Any]) -> ProfileStats:
        """Starts the stats of a seed profile from its seeded aggregate attributes."""
        stats = cls(
            event_count=_int(attributes.get("EventCount")),
            order_count=_int(attributes.get("OrderCount")),
            lifetime_value=_number(attributes.get("LifetimeOrderValue")) or 0.0,
        )
        brand = attributes.get("FavoriteBrand")
        if isinstance(brand, str) and brand:
            stats.brands[brand] += 1
        return stats

    def absorb(self, other: ProfileStats) -> None:
        """Adds another profile's stats into these (used when two profiles merge)."""
        self.event_count += other.event_count
        self.order_count += other.order_count
        self.lifetime_value = _finite_sum(self.lifetime_value, other.lifetime_value)
        self.browse_count += other.browse_count
        self.coupon_orders += other.coupon_orders
        self.low_value_orders += other.low_value_orders
        self.last_event_type = other.last_event_type or self.last_event_type
        self.brands.update(other.brands)

    def record(self, event: Mapping[str, Any]) -> None:
        """Counts one event."""
        event_type = event.get("type") or event.get("event")
        self.event_count += 1
        if isinstance(event_type, str):
            self.last_event_type = event_type
            if event_type in BROWSE_TYPES:
                self.browse_count += 1
            if event_type in PURCHASE_TYPES:
                self._record_purchase(event)
        brand = event.get("item_brand") or event.get("brand")
        if isinstance(brand, str) and brand:
            self.brands[brand] += 1

    def _record_purchase(self, event: Mapping[str, Any]) -> None:
        value = _number(event.get("value"))
        value = _number(event.get("revenue")) if value is None else value
        self.order_count += 1
        self.lifetime_value = round(_finite_sum(self.lifetime_value, value or 0.0), 2)
        if event.get("coupon"):
            self.coupon_orders += 1
        if value is not None and value < LOW_ORDER_VALUE:
            self.low_value_orders += 1


def derive(stats: ProfileStats, attributes: dict[str, Any]) -> None:
    """Writes the aggregates and derived attributes of ``stats`` into ``attributes``."""
    attributes["EventCount"] = stats.event_count
    attributes["OrderCount"] = stats.order_count
    attributes["LifetimeOrderValue"] = round(stats.lifetime_value, 2)
    if stats.last_event_type is not None:
        attributes["LastEventType"] = stats.last_event_type
    attributes["LifetimeTier"] = tier(stats.lifetime_value)
    persona = derive_persona(stats)
    if persona is not None:
        attributes["Persona"] = persona
    if stats.brands:
        attributes["FavoriteBrand"] = stats.brands.most_common(1)[0][0]


def tier(lifetime_value: float) -> str:
    """The LifetimeTier for a lifetime order value (Bronze below 250, negatives included)."""
    return next(
        (name for threshold, name in TIER_THRESHOLDS if lifetime_value >= threshold), "Bronze"
    )


def derive_persona(stats: ProfileStats) -> str | None:
    """The Persona the events support, or None when they say nothing yet."""
    if stats.lifetime_value >= BIG_SPENDER_VALUE:
        return "Loyal Big Spender"
    if stats.order_count and (
        stats.coupon_orders or stats.low_value_orders * 2 >= stats.order_count
    ):
        return "Value Hunter"
    if not stats.order_count and stats.browse_count >= 3:
        return "Window Shopper"
    return None


def context_attributes(attributes: Mapping[str, Any], context: Mapping[str, str]) -> dict[str, Any]:
    """The context-dependent attributes for a profile in a page/cart context."""
    persona = attributes.get("Persona")
    category = context.get("pageCategory", "").strip().lower()
    cart_value = _number(context.get("cartValue"))
    tier_name = context.get("tierHint") or attributes.get("LifetimeTier")
    by_persona = {
        "Window Shopper": "new-arrivals",
        "Value Hunter": "sale",
        "Loyal Big Spender": "premium",
    }
    if cart_value is not None and cart_value >= FREE_SHIPPING_CART_VALUE:
        offer = "free-shipping"
    elif category:
        offer = f"{category}-10-off"
    elif persona == "Value Hunter":
        offer = "coupon-15-off"
    else:
        offer = "newsletter-signup"
    hero = {"Platinum": "hero-premium", "Gold": "hero-premium", "Silver": "hero-standard"}
    return {
        "RecommendedCategory": category or by_persona.get(str(persona), "bestsellers"),
        "NextBestOffer": offer,
        "HeroVariant": hero.get(str(tier_name), "hero-welcome"),
    }


def _number(raw: object) -> float | None:
    """A finite number from a JSON number or numeric string; None for anything else.

    ``"nan"``, ``"inf"`` and ``"1e999"`` parse as floats but are no amount: kept, they made
    every answer holding the profile a 500 (JSON has no NaN or Infinity).
    """
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        return None
    try:
        number = float(raw)
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _finite_sum(total: float, amount: float) -> float:
    """``total + amount``, or ``total`` unchanged when the sum leaves the float range."""
    result = total + amount
    return result if math.isfinite(result) else total


def _int(raw: object) -> int:
    number = _number(raw)
    return int(number) if number is not None else 0
