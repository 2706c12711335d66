"""``with_personalized``: adding personalised attributes in place equals attaching them."""

from __future__ import annotations

from typing import Any

import pytest

from amperity_signal.enrich.result import attach, with_personalized

EVENTS: list[dict[str, Any]] = [
    {"anonymous_id": "a1"},
    {"anonymous_id": "a1", "partner_attrs": {}},
    {"anonymous_id": "a1", "partner_attrs": {"other": {"x": 1}}},
    {"anonymous_id": "a1", "partner_attrs": {"amperity_personalized": {"Old": "yes"}}},
    {"anonymous_id": "a1", "partner_attrs": "not a mapping"},
]


@pytest.mark.parametrize("event", EVENTS)
@pytest.mark.parametrize("attributes", [None, {}, {"Persona": "Value Hunter"}])
@pytest.mark.parametrize("personalized", [{}, {"Offer": "shoes-10"}])
@pytest.mark.parametrize("amperity_id", [None, "p-1"])
def test_adding_personalized_in_place_equals_attaching_it(
    event: dict[str, Any],
    attributes: dict[str, Any] | None,
    personalized: dict[str, Any],
    amperity_id: str | None,
) -> None:
    expected = attach(event, amperity_id, attributes, personalized)
    enriched = attach(event, amperity_id, attributes)
    with_personalized(enriched, personalized)
    assert enriched == expected


def test_adding_personalized_leaves_the_event_and_attributes_alone() -> None:
    event: dict[str, Any] = {"anonymous_id": "a1", "partner_attrs": {"other": {"x": 1}}}
    personalized = {"Offer": "shoes-10"}
    enriched = attach(event, "p-1", {"Persona": "P"})
    with_personalized(enriched, personalized)
    enriched["partner_attrs"]["amperity_personalized"]["Offer"] = "changed"
    assert event == {"anonymous_id": "a1", "partner_attrs": {"other": {"x": 1}}}
    assert personalized == {"Offer": "shoes-10"}
