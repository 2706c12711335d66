"""``send-test-event``: the spec's "Verify it's working", from the command line.

Maps one test event through the integration's blueprint, posts it to the realtime stream
and prints the vendor request and Amperity's answer (or the troubleshooting advice).
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime

from amperity_signal.amperity.client import AmperityClient
from amperity_signal.amperity.ratelimit import MemoryRateLimiter
from amperity_signal.blueprint import load_blueprint, map_event
from amperity_signal.config import Settings
from amperity_signal.errors import AmperityError, InvalidEvent
from amperity_signal.metrics import Metrics


async def send_test_event(settings: Settings, integration_id: str | None) -> int:
    """Deliver one test event; 0 when Amperity accepted it, 1 otherwise."""
    if not settings.integrations:
        print("no [[integrations]] in the configuration: add one first.")
        return 1
    integration = (
        settings.integration(integration_id) if integration_id else settings.integrations[0]
    )
    if integration is None:
        print(f"no integration {integration_id!r} is configured.")
        return 1
    event = {
        "message_id": f"test-{uuid.uuid4()}",
        "type": "track",
        "event": "signal_test_event",
        "anonymous_id": "anon_signal_test",
        "canonical_id": "anon_signal_test",
        "timestamp": datetime.now(UTC),
        "properties": {"note": "sent by amperity-signal send-test-event"},
    }
    mapped = map_event(
        load_blueprint(integration.vertical, integration.blueprint),
        event,
        source_value=integration.source_value,
    )
    client = AmperityClient(
        integration,
        limiter=MemoryRateLimiter(),
        metrics=Metrics(),
        proxies=settings.proxies,
        trusted_certificates=settings.trusted_certificates,
    )
    print(f"integration {integration.id}: payload\n{json.dumps(mapped.payload, indent=2)}")
    try:
        result = await client.post_event(mapped.payload, deadline=time.monotonic() + 30)
    except (AmperityError, InvalidEvent) as error:
        print(f"FAILED: {error.message}")
        return 1
    finally:
        await client.aclose()
    call = result.call
    print(f"{call.method} {call.url} -> {call.status_code} (attempts {call.attempts})")
    if result.dropping:
        # Accepted, as Deliver takes a 204, but the inspector will never show it.
        print(
            "warning: the stream is dropping events (204): Amperity accepted the event, but "
            "it will not appear in the stream's event inspector nor update a profile. Set the "
            "stream's mode to active in Amperity (Sources > Streams) and send it again."
        )
        return 0
    if result.unexpected_status:
        print(
            f"warning: Amperity answered {call.status_code}, which it does not document for "
            "ingest (only 202 and 204): check that api_base_url reaches Amperity directly."
        )
    print(
        "Accepted. In Amperity, open the stream's event inspector: the event appears within "
        f"about 5 s. If it never does, it was routed to _unknown: source "
        f"{mapped.payload.get('source')!r} does not match the stream's routing expression: "
        "check your stream's routing expression in Amperity and match exactly "
        "(case-sensitive)."
    )
    return 0
