"""Per-integration overrides: global mappings and handlers added or replaced by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError

from amperity_signal.blueprint import (
    VERTICALS,
    BlueprintError,
    BlueprintOverrides,
    load_blueprint,
    map_event,
)

EventFactory = Callable[..., dict[str, Any]]


def _overrides(data: dict[str, Any]) -> BlueprintOverrides:
    """Validate overrides the way the integration config does."""
    return BlueprintOverrides.model_validate(data)


def test_global_override_adds_a_new_target(make_event: EventFactory) -> None:
    """A global mapping with a new target is appended, e.g. the spec's user_persona."""
    blueprint = load_blueprint(
        "retail",
        _overrides(
            {
                "global_mappings": [
                    {"source": "partner_attrs.amperity.Persona", "target": "user_persona"}
                ]
            }
        ),
    )
    event = make_event("view_item", partner_attrs={"amperity": {"Persona": "Value Hunter"}})
    assert map_event(blueprint, event, source_value="S").payload["user_persona"] == "Value Hunter"


def test_global_override_replaces_the_mapping_with_the_same_target(
    make_event: EventFactory,
) -> None:
    """A global mapping whose target exists replaces the shipped one in place."""
    blueprint = load_blueprint(
        "retail", _overrides({"global_mappings": [{"source": "user_id", "target": "cookieid"}]})
    )
    event = make_event("view_item", user_id="u-9")
    payload = map_event(blueprint, event, source_value="S").payload
    assert payload["cookieid"] == "u-9"
    assert sum(1 for m in blueprint.global_mappings if m.target == "cookieid") == 1


def test_handler_override_adds_a_new_handler(make_event: EventFactory) -> None:
    """A handler with a new name claims its events, with its own mappings and type."""
    blueprint = load_blueprint(
        "retail",
        _overrides(
            {
                "handlers": {
                    "wishlist": {
                        "type": "add_to_wishlist",
                        "events": ["Product Added to Wishlist"],
                        "mappings": [{"source": "properties.wishlist_id", "target": "wishlist_id"}],
                        "include_properties": True,
                    }
                }
            }
        ),
    )
    event = make_event(
        "Product Added to Wishlist", properties={"wishlist_id": "w1", "colour": "red"}
    )
    mapped = map_event(blueprint, event, source_value="S")
    assert (mapped.handler, mapped.amperity_type) == ("wishlist", "add_to_wishlist")
    assert mapped.payload["wishlist_id"] == "w1"
    assert mapped.payload["colour"] == "red"
    assert "prop_wishlist_id" not in mapped.payload


def test_handler_override_replaces_the_preset_handler_by_name(make_event: EventFactory) -> None:
    """A handler with a preset handler's name replaces it entirely."""
    blueprint = load_blueprint(
        "retail",
        _overrides(
            {
                "handlers": {
                    "purchase": {
                        "type": "order",
                        "events": ["purchase", "Order Completed", "Order Placed"],
                    }
                }
            }
        ),
    )
    mapped = map_event(
        blueprint, make_event("Order Placed", properties={"value": 5}), source_value="S"
    )
    assert mapped.amperity_type == "order"
    assert "value" not in mapped.payload


def test_override_handler_claiming_an_event_of_another_handler_is_refused() -> None:
    """Two handlers may not claim one event name; the error says which and how to fix."""
    with pytest.raises(BlueprintError, match=r"'view_item'.*replace 'view_item' by name"):
        load_blueprint(
            "retail", _overrides({"handlers": {"mine": {"type": "x", "events": ["view_item"]}}})
        )


def test_override_targeting_consent_is_a_load_error() -> None:
    """Consent is built in: an override mapping it is refused, naming the target."""
    with pytest.raises(ValidationError, match="'consent' is built into the engine"):
        _overrides({"global_mappings": [{"source": "context.consent", "target": "consent"}]})


@pytest.mark.parametrize("target", ["source", "type"])
def test_override_targeting_source_or_type_is_a_load_error(target: str) -> None:
    """The source and type targets are built-ins too."""
    with pytest.raises(ValidationError, match="built into the engine"):
        _overrides({"global_mappings": [{"source": "event", "target": target}]})


def test_override_with_unknown_transform_names_the_allowed_ones() -> None:
    """An unknown transform is refused with the mapping's target and the allowed names."""
    with pytest.raises(ValidationError, match=r"'email'.*'sha265'.*allowed: lowercase"):
        _overrides(
            {
                "global_mappings": [
                    {"source": "traits.email", "target": "email", "transform": ["trim", "sha265"]}
                ]
            }
        )


def test_override_handler_using_an_unknown_mapping_set_is_refused() -> None:
    """A handler may only use the preset's mapping sets; the error lists them."""
    with pytest.raises(BlueprintError, match=r"'nope'.*defined sets: .*commerce"):
        load_blueprint(
            "retail",
            _overrides({"handlers": {"x": {"type": "x", "events": ["X"], "use": ["nope"]}}}),
        )


def test_override_handler_can_use_the_preset_mapping_sets(make_event: EventFactory) -> None:
    """An added handler may reuse the preset's mapping sets by name."""
    blueprint = load_blueprint(
        "retail",
        _overrides(
            {
                "handlers": {
                    "wish": {
                        "type": "add_to_wishlist",
                        "events": ["add_to_wishlist"],
                        "use": ["commerce", "items"],
                    }
                }
            }
        ),
    )
    payload = map_event(
        blueprint,
        make_event("add_to_wishlist", properties={"currency": "eur", "items": [{"item_id": "S"}]}),
        source_value="S",
    ).payload
    assert (payload["currency"], payload["item_id"]) == ("EUR", "S")


def test_overrides_do_not_leak_into_other_loads() -> None:
    """Loading with overrides leaves the cached preset untouched for the next integration."""
    load_blueprint(
        "retail", _overrides({"global_mappings": [{"source": "user_id", "target": "brand_new"}]})
    )
    assert "brand_new" not in {m.target for m in load_blueprint("retail").global_mappings}


@pytest.mark.parametrize(
    ("mapping", "field", "guess"),
    [
        ({"source": "propertes.category", "target": "page_category"}, "source", "properties"),
        (
            {"source": "traits.tier", "fallbacks": ["contxt.page.path"], "target": "tier"},
            "fallbacks",
            "context",
        ),
        ({"source": "userId", "target": "who"}, "source", "user_id"),
    ],
)
def test_a_mapping_path_that_starts_with_no_part_of_the_event_is_refused(
    mapping: dict[str, Any], field: str, guess: str
) -> None:
    """A typo in a path's first part found nothing on every event, and nobody was told."""
    with pytest.raises(ValidationError) as caught:
        _overrides({"global_mappings": [mapping]})
    (error,) = caught.value.errors()
    assert error["loc"][-1] == field
    assert "does not start with a part of the event" in error["msg"]
    assert f"did you mean '{guess}'?" in error["msg"]


@pytest.mark.parametrize("path", ["user_id.x", "anonymous_id.0", "timestamp.seconds"])
def test_a_mapping_path_below_a_flat_field_is_refused(path: str) -> None:
    """A flat field has no parts: a path below one found nothing on every event."""
    with pytest.raises(ValidationError) as caught:
        _overrides({"global_mappings": [{"source": path, "target": "who"}]})
    (error,) = caught.value.errors()
    assert "a flat field of the event with no parts" in error["msg"]
    assert f"write {path.split('.', maxsplit=1)[0]} alone" in error["msg"]


def test_every_shipped_blueprint_path_starts_with_a_part_of_the_event() -> None:
    """The shipped YAML goes through the same check: every vertical still loads."""
    for vertical in VERTICALS:
        assert load_blueprint(vertical).global_mappings
