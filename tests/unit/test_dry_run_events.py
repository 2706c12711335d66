"""deliverable_event: a dry run's event is what the gateway and Deliver make of it.

The refusals themselves are pinned through the CLI (tests/unit/test_cli.py); these pin
what a valid event becomes, and the two departures from the gateway (docs/blueprint.md,
"Dry run").
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from amperity_signal.dry_run_events import deliverable_event
from amperity_signal.errors import InvalidEvent
from amperity_signal.gateway.convert import RequestFacts, event_from_json
from amperity_signal.gateway.errors import InvalidFieldError

NOW = datetime(2026, 4, 17, 15, 0, 0, 123456, tzinfo=UTC)


def test_what_the_gateway_fills_in_is_filled_in() -> None:
    """No type is track, no messageId a uuid4, no timestamp the receive time."""
    event = deliverable_event({"event": "X", "anonymousId": "a"}, 0, NOW)
    assert event["type"] == "track"
    assert uuid.UUID(event["message_id"]).version == 4
    assert event["timestamp"] == NOW
    assert event["canonical_id"] == "a"


def test_partner_attrs_are_carried_over_though_the_gateway_refuses_them() -> None:
    """Datafly Signal attaches partnerAttrs server-side and sends them over gRPC."""
    data: dict[str, Any] = {
        "type": "page",
        "anonymousId": "a",
        "partnerAttrs": {"amperity": {"amperity_id": "AMP-1", "tier": 2}},
    }
    facts = RequestFacts("track", "", None, None, NOW, lambda: "m")
    with pytest.raises(InvalidFieldError, match="partnerAttrs"):
        event_from_json(data, facts)
    event = deliverable_event(data, 0, NOW)
    assert event["partner_attrs"] == {"amperity": {"amperity_id": "AMP-1", "tier": 2}}
    assert data["partnerAttrs"] == {"amperity": {"amperity_id": "AMP-1", "tier": 2}}


def test_the_events_own_ip_and_user_agent_are_the_requests() -> None:
    """The gateway takes the connection's IP; an exported event's own one stands for it."""
    data = {"type": "page", "anonymousId": "a", "context": {"ip": "203.0.113.7", "userAgent": "U"}}
    context = deliverable_event(data, 0, NOW)["context"]
    assert context["ip"] == "203.0.113.7"
    assert context["user_agent"] == "U"


def test_deliver_field_names_take_the_events_index() -> None:
    """Deliver names a field ``event.x``; a dry run ``events[i].x``, the rest its words."""
    with pytest.raises(InvalidEvent) as caught:
        deliverable_event({"type": "track", "anonymousId": "a"}, 4, NOW)
    assert [(v.field, v.description) for v in caught.value.violations] == [
        ("events[4].event", "a track event needs a name.")
    ]


def test_whole_numbers_come_out_as_deliver_maps_them() -> None:
    """A Struct carries doubles; Deliver maps 120.0 as 120, and so does a dry run."""
    data = {"type": "track", "event": "X", "anonymousId": "a", "properties": {"price": 120.0}}
    assert deliverable_event(data, 0, NOW)["properties"] == {"price": 120}


def test_struct_and_map_keys_come_back_in_the_files_order() -> None:
    """A Struct's or map's own key order differs between processes; the file's is kept.

    Forty keys in an order neither sorted nor any hash's: the chance that a Struct hands
    them back so by accident is nil, so the old conversion fails this.
    """
    keys = [f"k{(i * 17) % 40:02d}" for i in range(40)]
    nested = {key: i for i, key in enumerate(reversed(keys))}
    event = deliverable_event(
        {
            "event": "X",
            "anonymousId": "a",
            "properties": {**{key: i for i, key in enumerate(keys)}, "items": [nested]},
            "traits": nested,
            "partnerAttrs": {"amperity": nested},
            "context": {"consent": {"categories": dict.fromkeys(keys, True)}},
        },
        0,
        NOW,
    )
    assert list(event["properties"]) == [*keys, "items"]
    assert list(event["properties"]["items"][0]) == list(nested)
    assert list(event["traits"]) == list(nested)
    assert list(event["partner_attrs"]["amperity"]) == list(nested)
    assert list(event["context"]["consent"]["categories"]) == keys


def test_a_body_too_large_is_the_gateways_413_alone_partner_attrs_left_out() -> None:
    """The gateway refuses a body by its size before reading it: that refusal alone.

    ``partnerAttrs``, which Signal attaches server-side and no page sends, do not count.
    """
    big = {"type": "track", "event": "X", "anonymousId": 7, "properties": {"s": "x" * 3000}}
    with pytest.raises(InvalidEvent) as caught:
        deliverable_event(big, 2, NOW, max_body_bytes=2048)
    assert [(v.field, v.description) for v in caught.value.violations] == [
        ("events[2]", "The request body is larger than 2048 bytes; send less.")
    ]
    attached = {"type": "page", "anonymousId": "a", "partnerAttrs": {"s": "x" * 3000}}
    event = deliverable_event(attached, 2, NOW, max_body_bytes=2048)
    assert event["partner_attrs"] == {"s": "x" * 3000}
