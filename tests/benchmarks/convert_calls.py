"""The gateway's converter on one full browser event, marked for callgrind (counts).

    valgrind --tool=callgrind --dump-before=os_getppid python -m tests.benchmarks.convert_calls

(with the venv's python) writes 1,000 ``event_from_json`` calls, after 100 warm-up, to
part 2 (``callgrind.out.PID.2``): its ``summary`` over 1,000 is the instructions per event.
"""

from __future__ import annotations

import gc
import os
from datetime import UTC, datetime
from typing import Any

from amperity_signal.gateway.convert import RequestFacts, event_from_json

CALLS = 1000
FACTS = RequestFacts(
    "track", "203.0.113.7", "Mozilla/5.0", "anon-1", datetime(2025, 1, 31, tzinfo=UTC), lambda: "m"
)
# Every part of the converter: top-level names and aliases, each sub-message, consent.
EVENT: dict[str, Any] = {
    "type": "track",
    "event": "Product Viewed",
    "messageId": "m-9",
    "anonymousId": "anon-1",
    "userId": "u-1",
    "timestamp": "2025-01-31T12:00:00.123Z",
    "properties": {"sku": "A1", "price": 12.5},
    "context": {
        "userAgent": "x",
        "locale": "en-GB",
        "timezone": "Europe/London",
        "page": {"url": "https://shop.example.com/p/1", "path": "/p/1", "title": "P"},
        "campaign": {"source": "google", "medium": "cpc"},
        "geo": {"country": "GB", "postalCode": "SW1"},
        "session": {"id": "s1", "number": 3},
        "vendorIds": {"gaClientId": "GA1.1", "fbp": "fb.1"},
        "consent": {
            "analytics": True,
            "categories": {"C0001": True},
            "google": {"ad_storage": "granted"},
        },
    },
}


def main() -> None:
    """Warm up, then convert ``CALLS`` events between ``os.getppid()`` markers."""
    for _ in range(100):
        event_from_json(EVENT, FACTS)
    gc.collect()
    gc.freeze()
    os.getppid()
    for _ in range(CALLS):
        event_from_json(EVENT, FACTS)
    os.getppid()


if __name__ == "__main__":
    main()
