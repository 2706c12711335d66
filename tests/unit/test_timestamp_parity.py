"""The gateway reads an event's timestamp as the clients do, where the two grammars meet.

The clients take RFC 3339 only (``clients/testdata/timestamps.json``, which both client
suites read); the gateway parses Datafly JSON with ``datetime.fromisoformat``. This pins
that on every string both take they name the same instant (the gateway to microseconds),
and lists where they differ, as docs/gateway.md does, so a change to either shows here.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from amperity_signal.gateway import convert
from amperity_signal.gateway.errors import InvalidFieldError

CASES: list[dict[str, Any]] = json.loads(
    (Path(__file__).parents[2] / "clients" / "testdata" / "timestamps.json").read_text("utf-8")
)["cases"]
FACTS = convert.RequestFacts("track", "127.0.0.1", None, None, datetime.now(UTC), lambda: "m")
# RFC 3339 allows lowercase t and z; fromisoformat does not.
GATEWAY_REFUSES = {"2025-01-31t12:00:00z"}
# What fromisoformat takes beyond RFC 3339; datafly.js sends Date.toISOString(), never these.
GATEWAY_ALSO_TAKES = {
    "2025-01-31",
    "2025-01-31T12:00",
    "2025-01-31T12:00Z",
    "2025-W05-5",
    "2025-W05-5T12:00:00Z",
    "20250131T120000Z",
    "2025-01-31T12:00:00,250Z",
    "2025-01-31T12:00:00.Z",
    "2025-01-31T13:00:00+0100",
    "2025-01-31T13:00:00+01",
    "2025-01-31x12:00:00Z",
    "2025-01-31T12:00:00-05:60",
}


def _gateway(timestamp: str) -> tuple[str, int] | None:
    """The gateway's Timestamp for ``timestamp`` as (seconds, nanos), or None when refused."""
    try:
        event = convert.event_from_json({"anonymousId": "a", "timestamp": timestamp}, FACTS)
    except InvalidFieldError:
        return None
    return str(event.timestamp.seconds), event.timestamp.nanos


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_the_gateway_names_the_instant_the_clients_name_or_differs_as_documented(
    case: dict[str, Any],
) -> None:
    """Same instant to the microsecond; the differences are the documented ones, no more."""
    read = _gateway(case["input"])
    if "error" not in case and case["input"] not in GATEWAY_REFUSES:
        assert read == (case["seconds"], case["nanos"] // 1000 * 1000)
    elif case["input"] in GATEWAY_REFUSES or case["input"] not in GATEWAY_ALSO_TAKES:
        assert read is None
    else:
        assert read is not None
