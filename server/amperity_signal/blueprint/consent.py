"""The nested ``consent`` field: a built-in of the engine, sent on every event it can be.

The spec makes consent unconditional: no mapping or override can drop or rename it.
Absent parts stay absent (no nulls, no empty dicts), so Amperity can tell "not asked"
from "denied".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

CANONICAL_FLAGS = ("analytics", "marketing", "functional")
GOOGLE_SIGNALS = ("ad_storage", "ad_user_data", "ad_personalization", "analytics_storage")
GOOGLE_VALUES = frozenset({"granted", "denied"})


def build_consent(event: Mapping[str, Any]) -> dict[str, Any] | None:
    """Build ``consent`` from ``context.consent``, or None when the visitor set nothing.

    Args:
        event: The event dict.

    Returns:
        ``{"analytics"?, "marketing"?, "functional"?, "categories"?, "google"?}`` holding
        only the parts that were set (booleans; ``"granted"``/``"denied"`` for google).
    """
    context = event.get("context")
    raw = context.get("consent") if isinstance(context, Mapping) else None
    if not isinstance(raw, Mapping):
        return None
    consent: dict[str, Any] = {
        flag: raw[flag] for flag in CANONICAL_FLAGS if isinstance(raw.get(flag), bool)
    }
    categories = raw.get("categories")
    if isinstance(categories, Mapping):
        kept = {str(code): value for code, value in categories.items() if isinstance(value, bool)}
        if kept:
            consent["categories"] = kept
    google = raw.get("google")
    if isinstance(google, Mapping):
        signals = {
            name: google[name] for name in GOOGLE_SIGNALS if google.get(name) in GOOGLE_VALUES
        }
        if signals:
            consent["google"] = signals
    return consent or None
