"""The gateway's converter on one full browser event, marked for callgrind (counts).

    valgrind --tool=callgrind --dump-before=os_getppid python -m tests.benchmarks.convert_calls

(with the venv's python) writes 1,000 ``event_from_json`` calls, after 100 warm-up, to
part 2 (``callgrind.out.PID.2``): its ``summary`` over 1,000 is the instructions per event.
With ``--sent-at`` each call is what a one-event request carrying ``sentAt`` converts:
reading ``sentAt``, its ``PageClock`` and the event, its timestamp put on the gateway's clock.
"""

from __future__ import annotations

import gc
import os
import sys
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from amperity_signal.gateway.convert import (
    RequestFacts,
    event_from_json,
    page_clock,
    sent_at_from_json,
)

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


SENT = {**EVENT, "sentAt": "2025-01-31T12:00:01.500Z"}


SENT_FACTS = replace(FACTS, clock=page_clock(sent_at_from_json(SENT, "x"), FACTS.now))


def convert_sent() -> None:
    """One event of a request with ``sentAt``, as ``/v1/t`` converts it.

    The route builds its ``RequestFacts`` with or without ``sentAt``, so that is left out:
    what is counted is what ``sentAt`` adds, and the event.
    """
    page_clock(sent_at_from_json(SENT, "INVALID_EVENT"), FACTS.now)
    event_from_json(SENT, SENT_FACTS)


def main() -> None:
    """Warm up, then convert ``CALLS`` events between ``os.getppid()`` markers."""
    if "--sent-at" in sys.argv[1:]:
        for _ in range(100):
            convert_sent()
        gc.collect()
        gc.freeze()
        os.getppid()
        for _ in range(CALLS):
            convert_sent()
        os.getppid()
        return
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
