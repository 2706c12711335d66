"""An event's timestamp string is read as the Node client reads it: the shared cases.

``clients/testdata/timestamps.json`` holds each string and its Timestamp (seconds, nanos)
or its whole error message; ``clients/node/test/timestamps.test.js`` runs the same file.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from amperity_signal_client import event_from_json
from amperity_signal_client.events import EventFieldError

CASES: list[dict[str, Any]] = json.loads(
    (Path(__file__).parents[2] / "clients" / "testdata" / "timestamps.json").read_text("utf-8")
)["cases"]


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_a_timestamp_string_is_read_as_the_shared_case_says(case: dict[str, Any]) -> None:
    """RFC 3339 only, no offset meaning UTC, nanoseconds kept; errors word for word."""
    if "error" in case:
        with pytest.raises(EventFieldError) as raised:
            event_from_json({"type": "page", "timestamp": case["input"]})
        assert str(raised.value) == case["error"]
        assert raised.value.field == "timestamp"
    else:
        timestamp = event_from_json({"type": "page", "timestamp": case["input"]}).timestamp
        assert (str(timestamp.seconds), timestamp.nanos) == (case["seconds"], case["nanos"])


def test_the_shared_cases_cover_what_the_clients_disagreed_on() -> None:
    """Nanoseconds, lowercase t and z, week dates, leap seconds and the years at the edges."""
    inputs = {case["input"] for case in CASES}
    assert {
        "2025-01-31T13:00:00.123456789+01:00",
        "2025-01-31t12:00:00z",
        "2025-W05-5",
        "2016-12-31T23:59:60Z",
        "0000-01-01T00:00:00Z",
        "9999-12-31T23:59:59-00:01",
    } <= inputs


def test_a_datetime_is_an_instant_naive_meaning_utc() -> None:
    """Aware in any zone or naive (UTC); one that is out of range in UTC is refused."""
    east = timezone(timedelta(hours=1))
    aware = event_from_json({"timestamp": datetime(2025, 1, 31, 13, tzinfo=east)}).timestamp
    naive = event_from_json({"timestamp": datetime(2025, 1, 31, 12, 0, 0, 250)}).timestamp
    assert (aware.seconds, aware.nanos) == (1738324800, 0)
    assert (naive.seconds, naive.nanos) == (1738324800, 250_000)
    assert aware.ToDatetime(tzinfo=UTC) == datetime(2025, 1, 31, 12, tzinfo=UTC)
    with pytest.raises(EventFieldError, match=r"^timestamp is out of the range a Timestamp holds"):
        event_from_json({"timestamp": datetime(1, 1, 1, tzinfo=east)})
