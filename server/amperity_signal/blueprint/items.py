"""Product lists: GA4 ``items[]`` and Segment ``products[]`` in one normalised shape.

Each product becomes ``{item_id, item_name, item_brand, item_category, item_variant,
price, quantity}`` with empty fields left out. A single dict is read as one product only
when it carries a product identifier or name (Segment's single-product events put
``product_id``/``sku``/``name`` straight into ``properties``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

# Normalised field -> the source keys that may hold it, GA4 first, then Segment.
_ALIASES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("item_id", ("item_id", "product_id", "sku", "id")),
    ("item_name", ("item_name", "name")),
    ("item_brand", ("item_brand", "brand")),
    ("item_category", ("item_category", "category")),
    ("item_variant", ("item_variant", "variant")),
    ("price", ("price",)),
    ("quantity", ("quantity",)),
)
# A JSON integer we send must fit a signed 64-bit int: orjson cannot write a larger one
# and Amperity's integer columns are 64-bit (``to_number`` sends bigger ones as floats).
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
_IDENTIFYING = ("item_id", "product_id", "sku", "item_name", "name")


def _scalar(value: Any) -> Any:
    """Keep a non-empty JSON scalar, text for ids and names; anything else is None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return str(int(value)) if value.is_integer() else str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value.strip() or None
    return None


def _number(value: Any) -> int | float | None:
    """Read a price or quantity as a finite number, or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    return None


def normalise_item(product: Mapping[str, Any]) -> dict[str, Any]:
    """Normalise one product dict; fields it does not carry are left out."""
    item: dict[str, Any] = {}
    for field, keys in _ALIASES:
        for key in keys:
            raw = product.get(key)
            if field == "price":
                value: Any = _number(raw)
            elif field == "quantity":
                number = _number(raw)
                value = None if number is None else int(number)
                if value is not None and not INT64_MIN <= value <= INT64_MAX:
                    value = None  # no integer column holds it, and orjson cannot write it
            else:
                value = _scalar(raw)
            if value is not None:
                item[field] = value
                break
    return item


def normalise_items(value: Any) -> list[dict[str, Any]]:
    """Normalise a product list, or a single product dict, into a list of products.

    Args:
        value: A list of product dicts, or one dict holding a single product's fields.

    Returns:
        The normalised products, skipping entries that are not dicts or end up empty.
    """
    if isinstance(value, Mapping):
        if not any(value.get(key) not in (None, "") for key in _IDENTIFYING):
            return []
        products: Sequence[Any] = [value]
    elif isinstance(value, Sequence) and not isinstance(value, str):
        products = value
    else:
        return []
    normalised = (normalise_item(p) for p in products if isinstance(p, Mapping))
    return [item for item in normalised if item]
