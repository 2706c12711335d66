"""BrowserProfile: the allowlist and the consent condition decide what a page may see."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest

from amperity_signal.limits import MAX_ANONYMOUS_ID
from amperity_signal.service.convert import struct_to_dict
from datafly.amperity.v1 import amperity_service_pb2 as pb
from tests.contract.harness import Harness
from tests.contract.test_contract import details
from tests.support import ALICE_EMAIL, message_id


async def identify(harness: Harness, anonymous_id: str, consent: pb.Consent | None) -> None:
    event = pb.Event(message_id=message_id(), type="identify", anonymous_id=anonymous_id)
    event.traits.update({"email": ALICE_EMAIL})
    if consent is not None:
        event.context.consent.CopyFrom(consent)
    await harness.stub.Deliver(pb.DeliverRequest(integration_id="web", event=event))


async def attributes(harness: Harness, anonymous_id: str) -> dict[str, Any]:
    response = await harness.stub.BrowserProfile(
        pb.BrowserProfileRequest(pipeline_key="pk_web", anonymous_id=anonymous_id)
    )
    return struct_to_dict(response.attributes)


async def test_an_empty_allowlist_exposes_nothing(make_harness: Callable[..., Any]) -> None:
    """A resolved visitor gets {} when browser_attribute_allowlist is empty."""
    harness: Harness = await make_harness(browser_attribute_allowlist="")
    await identify(harness, "anon_empty_allowlist", None)
    assert await attributes(harness, "anon_empty_allowlist") == {}


async def test_a_visitor_who_denied_the_consent_condition_gets_nothing(
    make_harness: Callable[..., Any],
) -> None:
    """With browser_consent=functional: granted → attributes, denied or unknown → {}."""
    harness: Harness = await make_harness(browser_consent="functional")
    await identify(harness, "anon_granted", pb.Consent(functional=True))
    await identify(harness, "anon_denied", pb.Consent(functional=False))
    await identify(harness, "anon_silent", None)
    assert await attributes(harness, "anon_granted") == {
        "Persona": "Value Hunter",
        "LifetimeTier": "Gold",
    }
    assert await attributes(harness, "anon_denied") == {}
    assert await attributes(harness, "anon_silent") == {}


async def test_a_cmp_category_can_be_the_consent_condition(
    make_harness: Callable[..., Any],
) -> None:
    """browser_consent=categories.C0003 reads the CMP category map, later events win."""
    harness: Harness = await make_harness(browser_consent="categories.C0003")
    await identify(harness, "anon_cmp", pb.Consent(categories={"C0003": True}))
    assert await attributes(harness, "anon_cmp") != {}
    await identify(harness, "anon_cmp", pb.Consent(categories={"C0003": False}))
    assert await attributes(harness, "anon_cmp") == {}


async def test_an_anonymous_id_longer_than_an_events_is_invalid_naming_it(
    make_harness: Callable[..., Any],
) -> None:
    """BrowserProfile caps anonymous_id as Deliver caps an event's, naming the field."""
    harness: Harness = await make_harness()
    long_id = "a" * (MAX_ANONYMOUS_ID + 1)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await attributes(harness, long_id)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    found = details(caught.value)
    assert found["ErrorInfo"].reason == "INVALID_REQUEST"  # a BrowserProfile has no event
    (violation,) = found["BadRequest"].field_violations
    assert violation.field == "anonymous_id"
    assert (caught.value.details() or "").startswith("invalid request: anonymous_id")
    assert long_id not in (caught.value.details() or "")
    assert await attributes(harness, "a" * MAX_ANONYMOUS_ID) == {}
