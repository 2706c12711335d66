"""``context.traits``: Segment-style identity, folded into the event's ``traits``.

The proto's ``Context`` has no ``traits`` field, so identity sent there was dropped by
every converter and reached Amperity as no email and no phone. The gateway and both
clients fold it into ``traits`` (the event's own keys win); the cases are
``clients/testdata/context_traits.json``, which the Node client's suite reads too.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from amperity_signal.blueprint import load_blueprint, map_event
from amperity_signal.dry_run_events import deliverable_event
from amperity_signal.errors import InvalidEvent
from amperity_signal.gateway import convert
from amperity_signal.gateway.errors import InvalidFieldError
from amperity_signal.gateway.fieldnames import event_field
from amperity_signal_client import event_from_json, struct_to_dict
from amperity_signal_client.fields import EventFieldError
from datafly.amperity.v1 import amperity_service_pb2 as pb

CASES: list[dict[str, Any]] = json.loads(
    (Path(__file__).parents[2] / "clients" / "testdata" / "context_traits.json").read_text("utf-8")
)["cases"]
NOW = datetime(2026, 4, 17, 15, 0, tzinfo=UTC)
FACTS = convert.RequestFacts("track", "", None, None, NOW, lambda: "m")


def _event(case: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = {"type": "track", "event": "x", "anonymousId": "a"}
    if case["traits"] is not None:
        data["traits"] = case["traits"]
    data["context"] = {"locale": "en-GB", "traits": case["context_traits"]}
    return data


def _traits(event: pb.Event) -> dict[str, Any] | None:
    return struct_to_dict(event.traits) if event.HasField("traits") else None


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_the_gateway_and_the_python_client_fold_context_traits_alike(
    case: dict[str, Any],
) -> None:
    """context.traits fills the traits the event does not hold; its own win."""
    data = _event(case)
    if "refused" in case:
        with pytest.raises(InvalidFieldError) as gateway:
            convert.event_from_json(data, FACTS)
        assert gateway.value.field == case["refused"]
        with pytest.raises(EventFieldError) as client:
            event_from_json(data)
        assert client.value.field == case["refused"]
        return
    assert _traits(convert.event_from_json(data, FACTS)) == case["expected"]
    assert _traits(event_from_json(data)) == case["expected"]


def test_identity_in_context_traits_reaches_the_payload() -> None:
    """A Segment-style track's email, phone and name are mapped, as if sent in traits."""
    data = {
        "type": "track",
        "event": "x",
        "anonymousId": "a",
        "context": {
            "traits": {
                "email": " Carol@Example.com",
                "phone": "+44 7700 900123",
                "first_name": "Carol",
                "lastName": "Jones",
            }
        },
    }
    payload = map_event(
        load_blueprint("retail"), deliverable_event(data, 0, NOW), source_value="S"
    ).payload
    assert {k: payload.get(k) for k in ("email", "phone", "first_name", "last_name")} == {
        "email": "carol@example.com",
        "phone": "+447700900123",
        "first_name": "Carol",
        "last_name": "Jones",
    }


def test_a_dry_run_keeps_the_folded_traits_in_the_files_order() -> None:
    """The event's own traits first, then those context.traits gave, as the file has them."""
    data = {
        "type": "page",
        "anonymousId": "a",
        "traits": {"plan": "gold", "email": "own@example.com"},
        "context": {"traits": {"phone": "+447700900123", "email": "x@example.com", "age": 4}},
    }
    traits = deliverable_event(data, 0, NOW)["traits"]
    assert list(traits.items()) == [
        ("plan", "gold"),
        ("email", "own@example.com"),
        ("phone", "+447700900123"),
        ("age", 4),
    ]


def test_a_refusal_of_a_trait_from_context_traits_names_it_there() -> None:
    """Deliver names a folded trait traits.<key>; the body sent it as context.traits.<key>."""
    data = {"traits": {"plan": "gold"}, "context": {"traits": {"email": "x", "a.b": {"c": 1}}}}
    assert event_field("event.traits.email", data) == "context.traits.email"
    assert event_field("event.traits.a.b.c", data, "batch[1].") == "batch[1].context.traits.a.b.c"
    assert event_field("event.traits.plan", data) == "traits.plan"
    own = {"traits": {"email": "y"}, "context": {"traits": {"email": "x"}}}
    assert event_field("event.traits.email", own) == "traits.email"


def test_a_dry_run_names_a_refused_trait_from_context_traits_as_the_file_sent_it() -> None:
    """A value Deliver refuses (too long) is named under context.traits, where it was."""
    data = {"type": "page", "anonymousId": "a", "context": {"traits": {"email": "x" * 10_000}}}
    with pytest.raises(InvalidEvent) as caught:
        deliverable_event(data, 2, NOW)
    assert [v.field for v in caught.value.violations] == ["events[2].context.traits.email"]
