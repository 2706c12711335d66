"""Path resolution: dotted paths, list indexes and flat fields."""

from __future__ import annotations

from typing import Any

import pytest

from amperity_signal.blueprint import resolve_path
from amperity_signal.blueprint.paths import compile_path, is_empty

EVENT: dict[str, Any] = {
    "amperity_id": "p-123",
    "context": {"page": {"path": "/cart"}},
    "properties": {"items": [{"id": "A"}, {"id": "B"}], "0": "zero-key", "nested": {"0": "x"}},
    "partner_attrs": {"amperity": {"Persona": "Value Hunter"}},
}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("amperity_id", "p-123"),
        ("context.page.path", "/cart"),
        ("properties.items.0.id", "A"),
        ("properties.items.1.id", "B"),
        ("properties.items.2.id", None),
        ("properties.nested.0", "x"),
        ("partner_attrs.amperity.Persona", "Value Hunter"),
        ("context.page.path.deeper", None),
        ("context.missing.path", None),
        ("properties.items.first", None),
    ],
)
def test_resolve_path_walks_dicts_lists_and_flat_fields(path: str, expected: Any) -> None:
    """Dotted paths reach nested dicts, numeric segments index lists, misses are None."""
    assert resolve_path(EVENT, path) == expected


@pytest.mark.parametrize("path", ["", "a..b", ".a", "a."])
def test_compile_path_rejects_empty_segments(path: str) -> None:
    """A path with an empty segment is refused when the blueprint is compiled."""
    with pytest.raises(ValueError, match="invalid path"):
        compile_path(path)


@pytest.mark.parametrize(
    ("value", "empty"),
    [(None, True), ("", True), ([], True), ({}, True), (0, False), (False, False), (" ", False)],
)
def test_is_empty_treats_only_none_and_empty_containers_as_absent(value: Any, empty: bool) -> None:
    """None, "", [] and {} are absent; zero and False are real values."""
    assert is_empty(value) is empty
