"""A personalisation context too long for a URL: the event still goes, personalisation not."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from datafly.amperity.v1 import amperity_service_pb2 as pb
from tests.contract.harness import Harness
from tests.support import ALICE_EMAIL, ALICE_PROFILE, message_id

CATEGORY_MAPPING = [{"source": "properties.category", "target": "pageCategory"}]


def alice_viewing(category: str) -> pb.Event:
    """A track event of a visitor the sandbox knows (Alice, by email), in ``category``."""
    sent = pb.Event(
        type="track", event="view_item", anonymous_id="anon_long_ctx", message_id=message_id()
    )
    sent.traits.update({"email": ALICE_EMAIL})
    sent.properties.update({"category": category})
    return sent


async def test_an_over_long_context_value_is_delivered_without_personalisation(
    make_harness: Callable[..., Any],
) -> None:
    """8,000 CJK characters (72 KB URL-encoded) in a mapped source: delivered, warned, no GET.

    httpx refused the profile GET's query (over 64 KB) with ``InvalidURL``, which nothing
    caught: Enrich and Deliver failed ``INTERNAL`` and the event was never delivered.
    """
    harness: Harness = await make_harness(
        personalisation_enabled=True, personalisation_context_mappings=CATEGORY_MAPPING
    )
    sent = alice_viewing("\u978b" * 8000)

    enriched = await harness.stub.Enrich(pb.EnrichRequest(integration_id="web", event=sent))
    delivered = await harness.stub.Deliver(pb.DeliverRequest(integration_id="web", event=sent))

    assert enriched.amperity_id == ALICE_PROFILE
    assert enriched.attributes["Persona"] == "Value Hunter"
    (warning,) = enriched.warnings
    assert "personalisation context too long" in warning
    assert "pageCategory" in warning
    assert "4,096" in warning
    assert "personalisation_context_mappings" in warning
    assert warning in delivered.warnings
    events = (await harness.inspector.get("/_sandbox/events")).json()["events"]
    assert [e["body"]["message_id"] for e in events] == [sent.message_id]
