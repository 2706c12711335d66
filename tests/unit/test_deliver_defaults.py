"""Deliver's missing message_id and timestamp are filled during conversion, not on a proto copy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from amperity_signal.service.convert import event_to_dict
from amperity_signal.service.validation import checked_event_dict
from datafly.amperity.v1 import amperity_service_pb2 as pb


def _event(**fields: object) -> pb.Event:
    event = pb.Event(type="track", event="Order Completed", anonymous_id="anon-1", **fields)  # type: ignore[arg-type]
    event.properties.update({"order_id": "o-1", "total": 12.5})
    event.context.ip = "203.0.113.9"
    return event


def test_missing_fields_are_filled_where_event_to_dict_puts_them() -> None:
    now = datetime.now(UTC)
    filled = checked_event_dict(_event(), message_id="m-generated", received_at=now)
    # What the old path gave: the proto copied, both fields set, then converted.
    reference = _event(message_id="m-generated")
    reference.timestamp.FromDatetime(now)
    expected = event_to_dict(reference)
    assert list(filled) == list(expected)
    assert filled == expected
    assert filled["timestamp"] is now


def test_a_missing_timestamp_alone_is_filled_and_the_message_id_kept() -> None:
    now = datetime.now(UTC)
    filled = checked_event_dict(_event(message_id="m-sent"), message_id="m-sent", received_at=now)
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
    assert filled["timestamp"] == now


def test_an_events_own_fields_win_over_the_defaults() -> None:
    event = _event(message_id="m-sent")
    event.timestamp.FromDatetime(datetime(2026, 1, 2, tzinfo=UTC))
    converted = checked_event_dict(
        event, message_id="m-unused", received_at=datetime.now(UTC) - timedelta(days=1)
    )
    assert converted == event_to_dict(event)
    assert converted["message_id"] == "m-sent"
    assert converted["timestamp"] == datetime(2026, 1, 2, tzinfo=UTC)
