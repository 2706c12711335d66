"""The Python client against a running service: Deliver, Enrich and BrowserProfile."""

from __future__ import annotations

import pytest

from amperity_signal_client import AsyncAmperityClient, InvalidArgument, event_from_json
from tests.e2e.stack import Stack
from tests.support import ALICE_EMAIL, ALICE_PROFILE

pytestmark = pytest.mark.e2e


async def test_python_client_delivers_enriches_and_reads_the_browser_profile(
    stack: Stack,
) -> None:
    """Each call's answer matches what the sandbox holds; a bad event raises a typed error."""
    sandbox = await stack.sandbox()
    service = await stack.service(sandbox, args=("--no-gateway",))
    async with AsyncAmperityClient(service.grpc_target, pipeline_key="pk_web") as client:
        delivered = await client.deliver(
            event_from_json(
                {
                    "type": "track",
                    "event": "Product Viewed",
                    "anonymousId": "anon_py",
                    "properties": {"product_id": "sku-9", "price": 12.5},
                }
            )
        )
        assert delivered.amperity_type == "view_item"
        assert delivered.vendor_request.status_code == 202
        enriched = await client.enrich(
            event_from_json(
                {"type": "identify", "anonymousId": "anon_py", "traits": {"email": ALICE_EMAIL}}
            )
        )
        assert enriched.resolved and enriched.amperity_id == ALICE_PROFILE
        profile = await client.browser_profile("anon_py")
        assert profile.provider == "amperity"
        assert dict(profile.attributes) == {"Persona": "Value Hunter", "LifetimeTier": "Gold"}
        with pytest.raises(InvalidArgument) as caught:
            await client.deliver(event_from_json({"type": "track", "event": "x"}))
        assert caught.value.reason == "INVALID_EVENT"
        assert "event.anonymous_id" in [v.field for v in caught.value.field_violations]
    received = [e["body"]["message_id"] for e in await sandbox.events()]
    assert delivered.message_id in received
