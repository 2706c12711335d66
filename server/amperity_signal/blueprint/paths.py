"""Source paths: dotted lookups into the event dict, compiled once and resolved per event.

A path is a dotted string such as ``context.page.path``, ``properties.items.0.item_id`` or
a flat event field such as ``amperity_id``. A numeric segment indexes a list (and is also
tried as a string key on a dict, since JSON object keys may be digits).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from amperity_signal.config_values import did_you_mean, quoted

EVENT_TABLES = ("context", "properties", "traits", "partner_attrs")
"""The event dict's nested parts: a path into one goes on past it (``properties.category``)."""

EVENT_FIELDS = (
    "message_id",
    "type",
    "event",
    "anonymous_id",
    "canonical_id",
    "user_id",
    "timestamp",
    "amperity_id",
)
"""The event dict's flat fields (``amperity_id`` once enrichment resolved the visitor)."""

EVENT_ROOTS = EVENT_TABLES + EVENT_FIELDS
"""Every top-level key of the event dict (docs/blueprint.md): where a path can start."""

Segment = tuple[str, int | None]
"""One path segment: the key and, when the segment is a non-negative integer, its index."""

CompiledPath = tuple[Segment, ...]


def compile_path(path: str) -> CompiledPath:
    """Split a dotted path into segments once, so resolving it per event does no parsing.

    Args:
        path: A dotted path such as ``properties.items.0.item_id``.

    Returns:
        The segments, each with its integer index pre-computed when it is a digit string.

    Raises:
        ValueError: The path is empty or has an empty segment (``a..b``).
    """
    parts = path.split(".")
    if not path or any(not part for part in parts):
        raise ValueError(
            f"invalid path {quoted(path)}: use dotted names such as 'context.page.path'"
        )
    return tuple((part, int(part) if part.isdigit() else None) for part in parts)


_TABLE_STARTS = ", ".join(f"{table}." for table in EVENT_TABLES)


def root_advice(root: str) -> str:
    """What to write instead of a path starting with ``root``, no part of the event."""
    return (
        f"{did_you_mean(root, EVENT_ROOTS)}start the path with one of {_TABLE_STARTS} (e.g. "
        f"properties.category), or make it a flat event field: {', '.join(EVENT_FIELDS)}"
    )


def compile_event_path(path: str) -> CompiledPath:
    """``compile_path``, refusing a path that starts with no part of the event.

    Such a path (``propertes.category``, a typo) would find nothing on every event, without
    a word: a mapping it feeds would never be sent, a personalisation never applied.

    Raises:
        ValueError: The path is malformed, its first segment is not in ``EVENT_ROOTS``, or
            it goes below a flat field (``user_id.x``).
    """
    compiled = compile_path(path)
    root = compiled[0][0]
    if root not in EVENT_ROOTS:
        raise ValueError(
            f"{quoted(path)} does not start with a part of the event, so it never finds a "
            f"value; {root_advice(root)}"
        )
    if root in EVENT_FIELDS and len(compiled) > 1:
        raise ValueError(
            f"{quoted(path)} goes below {root}, a flat field of the event with no parts, so "
            f"it never finds a value; write {root} alone, or start with one of {_TABLE_STARTS}"
        )
    return compiled


def resolve_compiled(event: Mapping[str, Any], path: CompiledPath) -> Any:
    """Resolve a compiled path against an event; missing anywhere along the way is None.

    Args:
        event: The event dict (or any nested mapping).
        path: Segments from :func:`compile_path`.

    Returns:
        The value found, or None when any segment is missing or of the wrong kind.
    """
    current: Any = event
    for key, index in path:
        # Exact type checks first: event dicts are plain dicts and lists, and an ABC
        # isinstance check costs several times more on this per-mapping hot path.
        kind = type(current)
        if kind is dict or (kind is not list and isinstance(current, Mapping)):
            current = current.get(key)
        elif index is not None and (
            kind is list or (isinstance(current, Sequence) and not isinstance(current, str))
        ):
            current = current[index] if index < len(current) else None
        else:
            return None
        if current is None:
            return None
    return current


def resolve_path(event: Mapping[str, Any], path: str) -> Any:
    """Resolve a dotted path against an event (convenience form of :func:`resolve_compiled`).

    Args:
        event: The event dict.
        path: A dotted path such as ``context.page.path`` or ``properties.items.0.id``.

    Returns:
        The value found, or None when the path does not lead anywhere.

    Examples:
        >>> resolve_path({"context": {"page": {"path": "/cart"}}}, "context.page.path")
        '/cart'
        >>> resolve_path({"properties": {"items": [{"id": "A"}]}}, "properties.items.0.id")
        'A'
    """
    return resolve_compiled(event, _compiled(path))


@functools.lru_cache(maxsize=1024)
def _compiled(path: str) -> CompiledPath:
    """``compile_path`` memoised: callers of ``resolve_path`` pass configured paths."""
    return compile_path(path)


def is_empty(value: Any) -> bool:
    """Tell whether a value counts as absent: None, "", [] or {} (but not 0 or False)."""
    if value is None:
        return True
    kind = type(value)
    if kind is str or kind is dict or kind is list or kind is tuple:
        return len(value) == 0
    if kind is int or kind is float or kind is bool:
        return False
    if isinstance(value, str | Mapping | Sequence):
        return len(value) == 0
    return False
