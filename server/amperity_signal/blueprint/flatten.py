"""Strict JSON and flattening: what pass-through does with an event's properties.

Rules (also in ``docs/blueprint.md``):

* Keys become snake_case (``productId`` and ``Product Id`` both become ``product_id``).
* Nested dicts are flattened with ``_`` up to ``MAX_FLATTEN_DEPTH`` levels of keys
  (``{"a": {"b": 1}}`` becomes ``a_b``); a dict deeper than that is kept as a JSON object.
* Lists of scalars stay lists; lists of objects stay JSON arrays of (cleaned) objects.
* A flattened key equal to a target the blueprint declares (``email``, ``page_url``, ...)
  or to a built-in (``source``, ``type``, ``consent``) gets the prefix ``prop_``, so a
  custom property can never overwrite a mapped field and the key does not depend on
  whether the mapped field fired.
* Empty values (None, "", [], {}) are omitted at every level; NaN and Infinity are dropped
  with a warning; datetimes become ISO 8601 UTC strings; other non-JSON values are dropped
  with a warning.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any, Final

from amperity_signal.blueprint.transforms import format_timestamp

MAX_FLATTEN_DEPTH: Final = 3
PROPERTY_PREFIX: Final = "prop_"

_ACRONYM_BOUNDARY = re.compile(r"([A-Z]+)([A-Z][a-z])")
_CAMEL_BOUNDARY = re.compile(r"([a-z0-9])([A-Z])")
# Letters and digits of any script are kept ("größe", "名前"); everything else is a separator.
_NON_WORD = re.compile(r"[\W_]+")


class _Omitted:
    """Marker for a value that cleaned down to nothing."""


OMITTED: Final = _Omitted()


def snake_case(name: str) -> str:
    """Normalise a name to lower snake_case: ``"Video Ad Clicked"`` -> ``"video_ad_clicked"``.

    CamelCase boundaries split (``"productId"`` -> ``"product_id"``, ``"OTPSent"`` ->
    ``"otp_sent"``), every run of characters other than letters and digits (of any script:
    ``"größe"`` and ``"名前"`` stay as they are) becomes one ``_``, and leading and trailing
    underscores are stripped.
    """
    spaced = _CAMEL_BOUNDARY.sub(r"\1_\2", _ACRONYM_BOUNDARY.sub(r"\1_\2", name))
    return _NON_WORD.sub("_", spaced.lower()).strip("_")


def clean_json(value: Any, path: str, warnings: list[str]) -> Any:
    """Return ``value`` as strict JSON with empties omitted, or ``OMITTED``.

    Scalars are returned untouched (no copy); containers are rebuilt only to drop what is
    not valid JSON.

    Args:
        value: Any value from the event.
        path: Where the value came from, for warnings.
        warnings: Collects one line per value dropped.

    Returns:
        The cleaned value, or ``OMITTED`` when nothing of it can be sent.
    """
    kind = type(value)
    if kind is int or kind is bool or (kind is str and value):
        return value
    if value is None or kind is str:
        return OMITTED
    if isinstance(value, float | str | int):
        return _clean_scalar(value, path, warnings)
    if isinstance(value, datetime | Mapping | list | tuple):
        return _clean_container(value, path, warnings)
    warnings.append(f"{path}: a {type(value).__name__} is not JSON; dropped")
    return OMITTED


def _clean_scalar(value: float | str | int, path: str, warnings: list[str]) -> Any:
    """Clean a float (finite only) or a str/int subclass (as the plain type)."""
    if isinstance(value, float):
        if math.isfinite(value):
            return float(value)
        warnings.append(f"{path}: {value!r} is not valid JSON; dropped")
        return OMITTED
    if isinstance(value, str):
        return str(value) if value else OMITTED
    return bool(value) if isinstance(value, bool) else int(value)


def _clean_container(value: Any, path: str, warnings: list[str]) -> Any:
    """Clean a datetime (to ISO 8601), a mapping or a list/tuple, dropping empties."""
    if isinstance(value, datetime):
        return format_timestamp(value)
    if isinstance(value, Mapping):
        cleaned = {}
        for key, item in value.items():
            kept = clean_json(item, f"{path}.{key}", warnings)
            if kept is not OMITTED:
                cleaned[str(key)] = kept
        return cleaned or OMITTED
    items = [clean_json(item, f"{path}.{i}", warnings) for i, item in enumerate(value)]
    return [item for item in items if item is not OMITTED] or OMITTED


def flatten_properties(
    properties: Mapping[str, Any],
    payload: dict[str, Any],
    *,
    reserved: Collection[str],
    skip: Collection[str],
    warnings: list[str],
) -> None:
    """Flatten an event's properties into the payload under the pass-through rules.

    Args:
        properties: The event's ``properties``.
        payload: The payload being built; keys already present are never overwritten.
        reserved: Targets the blueprint declares; a flattened key among them gets ``prop_``.
        skip: Top-level property keys a handler already mapped.
        warnings: Collects a line per value dropped or key collision.
    """
    flattener = _Flattener(payload, reserved, warnings)
    for key, value in properties.items():
        if key not in skip:
            flattener.add(str(key), value, 1, f"properties.{key}")


class _Flattener:
    """Writes flattened properties into one payload (state for one call only)."""

    def __init__(
        self, payload: dict[str, Any], reserved: Collection[str], warnings: list[str]
    ) -> None:
        self.payload = payload
        self.reserved = reserved
        self.warnings = warnings

    def add(self, key: str, value: Any, depth: int, path: str) -> None:
        """Write one (possibly nested) property under its flattened name."""
        if isinstance(value, Mapping) and depth < MAX_FLATTEN_DEPTH:
            for child_key, child in value.items():
                self.add(f"{key}_{child_key}", child, depth + 1, f"{path}.{child_key}")
            return
        cleaned = clean_json(value, path, self.warnings)
        if cleaned is OMITTED:
            return
        name = snake_case(key)
        if not name:
            self.warnings.append(f"{path}: the key has no letters or digits; dropped")
            return
        if name in self.reserved:
            name = PROPERTY_PREFIX + name
        if name in self.payload:
            self.warnings.append(f"{path}: flattens to {name!r}, already written; dropped")
            return
        self.payload[name] = cleaned
