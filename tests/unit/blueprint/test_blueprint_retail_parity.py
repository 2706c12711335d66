"""Retail: GA4 and Segment names of one action produce the same payload (spec table)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from amperity_signal.blueprint import SAMPLES_DIR, Blueprint, event_from_datafly_json, map_event

EventFactory = Callable[..., dict[str, Any]]

GA4_ITEM = {
    "item_id": "SKU-1",
    "item_name": "Runner",
    "item_brand": "Ex",
    "item_category": "Shoes",
    "price": 120.0,
    "quantity": 1.0,
}
SEG_PRODUCT = {
    "product_id": "SKU-1",
    "name": "Runner",
    "brand": "Ex",
    "category": "Shoes",
    "price": 120.0,
    "quantity": 1.0,
}
GA4_ITEM_2 = {"item_id": "SKU-2", "item_name": "Socks", "price": 12.5, "quantity": 2.0}
SEG_PRODUCT_2 = {"sku": "SKU-2", "name": "Socks", "price": 12.5, "quantity": 2.0}

# The spec's "Event name mappings" rows: (GA4 name, GA4 props), (Segment name, props), type.
PARITY_ROWS = [
    pytest.param(
        (
            "view_item_list",
            {"item_list_id": "shoes", "item_list_name": "Shoes", "items": [GA4_ITEM, GA4_ITEM_2]},
        ),
        (
            "Product List Viewed",
            {"list_id": "shoes", "category": "Shoes", "products": [SEG_PRODUCT, SEG_PRODUCT_2]},
        ),
        "view_item_list",
        id="view_item_list",
    ),
    pytest.param(
        ("view_item", {"currency": "GBP", "value": 120.0, "items": [GA4_ITEM]}),
        ("Product Viewed", {"currency": "GBP", "value": 120.0, **SEG_PRODUCT}),
        "view_item",
        id="view_item",
    ),
    pytest.param(
        ("add_to_cart", {"currency": "GBP", "value": 120.0, "cart_id": "c1", "items": [GA4_ITEM]}),
        ("Product Added", {"currency": "GBP", "value": 120.0, "cart_id": "c1", **SEG_PRODUCT}),
        "add_to_cart",
        id="add_to_cart",
    ),
    pytest.param(
        ("remove_from_cart", {"currency": "GBP", "value": 25.0, "items": [GA4_ITEM_2]}),
        ("Product Removed", {"currency": "GBP", "value": 25.0, **SEG_PRODUCT_2}),
        "remove_from_cart",
        id="remove_from_cart",
    ),
    pytest.param(
        ("view_cart", {"currency": "GBP", "value": 145.0, "items": [GA4_ITEM, GA4_ITEM_2]}),
        (
            "Cart Viewed",
            {"currency": "GBP", "value": 145.0, "products": [SEG_PRODUCT, SEG_PRODUCT_2]},
        ),
        "view_cart",
        id="view_cart",
    ),
    pytest.param(
        (
            "begin_checkout",
            {"currency": "GBP", "value": 145.0, "coupon": "S10", "items": [GA4_ITEM, GA4_ITEM_2]},
        ),
        (
            "Checkout Started",
            {
                "currency": "GBP",
                "value": 145.0,
                "coupon": "S10",
                "products": [SEG_PRODUCT, SEG_PRODUCT_2],
            },
        ),
        "begin_checkout",
        id="begin_checkout",
    ),
    pytest.param(
        (
            "purchase",
            {
                "transaction_id": "T-1",
                "currency": "GBP",
                "value": 145.0,
                "tax": 24.17,
                "shipping": 0.0,
                "coupon": "S10",
                "items": [GA4_ITEM, GA4_ITEM_2],
            },
        ),
        (
            "Order Completed",
            {
                "order_id": "T-1",
                "currency": "GBP",
                "total": 145.0,
                "tax": 24.17,
                "shipping": 0.0,
                "coupon": "S10",
                "products": [SEG_PRODUCT, SEG_PRODUCT_2],
            },
        ),
        "purchase",
        id="purchase",
    ),
]


def _without_event_name(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload minus event_name, which deliberately keeps the raw name."""
    return {k: v for k, v in payload.items() if k != "event_name"}


@pytest.mark.parametrize(("ga4", "segment", "amperity_type"), PARITY_ROWS)
def test_segment_and_ga4_names_produce_the_same_payload(
    retail: Blueprint,
    make_event: EventFactory,
    ga4: tuple[str, dict[str, Any]],
    segment: tuple[str, dict[str, Any]],
    amperity_type: str,
) -> None:
    """Both names of a retail action give one type and one payload, event_name aside."""
    ga4_mapped = map_event(retail, make_event(ga4[0], properties=ga4[1]), source_value="S")
    seg_mapped = map_event(retail, make_event(segment[0], properties=segment[1]), source_value="S")
    assert ga4_mapped.amperity_type == seg_mapped.amperity_type == amperity_type
    assert _without_event_name(ga4_mapped.payload) == _without_event_name(seg_mapped.payload)
    assert ga4_mapped.payload["event_name"] == ga4[0]
    assert seg_mapped.payload["event_name"] == segment[0]
    assert ga4_mapped.payload["items"]
    assert ga4_mapped.warnings == seg_mapped.warnings == ()


def test_page_message_maps_to_pageview(retail: Blueprint, make_event: EventFactory) -> None:
    """The spec's first row: a page message becomes type pageview."""
    mapped = map_event(retail, make_event(None, message_type="page"), source_value="S")
    assert mapped.amperity_type == "pageview"
    assert mapped.handler == "pageview"


def test_ga4_remove_from_cart_is_accepted_too(retail: Blueprint, make_event: EventFactory) -> None:
    """GA4's remove_from_cart maps like Segment's Product Removed."""
    mapped = map_event(retail, make_event("remove_from_cart"), source_value="S")
    assert mapped.amperity_type == "remove_from_cart"


def test_items_carry_the_normalised_shape_and_first_item_fields(
    retail: Blueprint, make_event: EventFactory
) -> None:
    """The items field is the normalised list and item_* flatten its first entry."""
    payload = map_event(
        retail,
        make_event(
            "Order Completed",
            properties={"order_id": 77.0, "products": [SEG_PRODUCT, SEG_PRODUCT_2]},
        ),
        source_value="S",
    ).payload
    assert payload["order_id"] == "77"
    assert payload["items"] == [
        {
            "item_id": "SKU-1",
            "item_name": "Runner",
            "item_brand": "Ex",
            "item_category": "Shoes",
            "price": 120.0,
            "quantity": 1,
        },
        {"item_id": "SKU-2", "item_name": "Socks", "price": 12.5, "quantity": 2},
    ]
    assert (payload["item_id"], payload["item_brand"], payload["item_quantity"]) == (
        "SKU-1",
        "Ex",
        1,
    )


def test_shipped_ga4_and_segment_samples_map_identically(retail: Blueprint) -> None:
    """The two sample files describe the same session and map to the same payloads."""
    ga4 = json.loads((SAMPLES_DIR / "retail_ga4.json").read_text())
    segment = json.loads((SAMPLES_DIR / "retail_segment.json").read_text())
    assert len(ga4) == len(segment)
    for ga4_event, seg_event in zip(ga4, segment, strict=True):
        left = map_event(retail, event_from_datafly_json(ga4_event), source_value="S")
        right = map_event(retail, event_from_datafly_json(seg_event), source_value="S")
        assert _without_event_name(left.payload) == _without_event_name(right.payload)
