"""Deliver fills a missing message_id and timestamp on the converted event, not on a proto copy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from amperity_signal.service.convert import event_to_dict
from amperity_signal.service.servicer import with_defaults
from datafly.amperity.v1 import amperity_service_pb2 as pb


def _event(**fields: object) -> pb.Event:
    event = pb.Event(type="track", event="Order Completed", anonymous_id="anon-1", **fields)  # type: ignore[arg-type]
    event.properties.update({"order_id": "o-1", "total": 12.5})
    event.context.ip = "203.0.113.9"
    return event


def test_missing_fields_are_filled_in_the_order_event_to_dict_writes_them() -> None:
    before = datetime.now(UTC)
    filled = with_defaults(event_to_dict(_event()), "m-generated")
    after = datetime.now(UTC)
    # What the old path gave: the proto copied, both fields set, then converted.
    reference = _event(message_id="m-generated")
    reference.timestamp.FromDatetime(before)
    expected = event_to_dict(reference)
    assert list(filled) == list(expected)
    assert {k: v for k, v in filled.items() if k != "timestamp"} == {
        k: v for k, v in expected.items() if k != "timestamp"
    }
    assert before <= filled["timestamp"] <= after
    assert filled["timestamp"].tzinfo is not None


def test_a_missing_timestamp_alone_is_filled_and_the_message_id_kept() -> None:
    filled = with_defaults(event_to_dict(_event(message_id="m-sent")), "m-unused")
    assert filled["message_id"] == "m-sent"
    assert list(filled)[:7] == [
        "message_id",
        "type",
        "event",
        "anonymous_id",
        "canonical_id",
        "timestamp",
        "properties",
    ]
    assert datetime.now(UTC) - filled["timestamp"] < timedelta(seconds=5)


def test_an_event_with_both_is_returned_as_it_is() -> None:
    event = _event(message_id="m-sent")
    event.timestamp.FromDatetime(datetime(2026, 1, 2, tzinfo=UTC))
    converted = event_to_dict(event)
    assert with_defaults(converted, "m-unused") is converted
    assert converted["timestamp"] == datetime(2026, 1, 2, tzinfo=UTC)
