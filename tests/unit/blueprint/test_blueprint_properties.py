"""Property-based: map_event never raises and always yields strict JSON."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from amperity_signal.blueprint import VERTICALS, load_blueprint, map_event

BLUEPRINTS = {vertical: load_blueprint(vertical) for vertical in VERTICALS}
EVENT_NAMES = st.sampled_from(
    [
        "view_item",
        "Product Viewed",
        "purchase",
        "Order Completed",
        "booking_completed",
        "video_content_milestone",
        "level_completed",
        "article_read",
        "Anything Else",
        "",
        "  ",
    ]
)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
PROPERTIES = st.dictionaries(
    st.sampled_from(
        [
            "items",
            "products",
            "value",
            "currency",
            "price",
            "quantity",
            "email",
            "level",
            "percent",
            "booking_id",
            "tags",
            "product_id",
        ]
    )
    | st.text(max_size=10),
    JSON_VALUES,
    max_size=8,
)
EVENTS = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["track", "page", "identify", "screen"]),
        "event": EVENT_NAMES,
        "anonymous_id": st.text(max_size=10),
        "properties": PROPERTIES,
        "traits": PROPERTIES,
        "context": st.fixed_dictionaries(
            {
                "consent": st.dictionaries(st.text(max_size=12), JSON_VALUES, max_size=4),
                "page": PROPERTIES,
                "session": PROPERTIES,
            }
        ),
    }
)


@settings(max_examples=300, deadline=None)
@given(vertical=st.sampled_from(VERTICALS), event=EVENTS)
def test_map_event_never_raises_and_always_yields_strict_json(
    vertical: str, event: dict[str, Any]
) -> None:
    """Random properties, traits, page, session and consent never break strict JSON output."""
    mapped = map_event(BLUEPRINTS[vertical], event, source_value="DATAFLY")
    json.dumps(mapped.payload, allow_nan=False)
    assert list(mapped.payload)[:2] == ["source", "type"]
    assert None not in mapped.payload.values()
