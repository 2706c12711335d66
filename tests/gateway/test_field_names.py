"""The service's refusals, answered by the gateway in the names the request body used.

The real service behind the gateway refuses what its own checks let through (strings
over 8192 characters, nesting deeper than 10 levels, a consentedAt ahead of its clock);
its BadRequest names proto paths (``event.context.vendor_ids.ga_client_id``), the
gateway's 400 the body's (``context.vendorIds.gaClientId``), in ``field`` and message.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from amperity_signal.limits import ANONYMOUS_ID_TOO_LONG, MAX_ANONYMOUS_ID
from tests.support import OutageStore
from tests.unit.enrich.enrich_fakes import FakeClock

from .realservice import Stack, real_stack

KEY = {"X-Pipeline-Key": "pk_web"}
TOO_LONG = "x" * 9000  # the service takes strings of at most 8192 characters
ID_TOO_LONG = "x" * (MAX_ANONYMOUS_ID + 1)  # and anonymous ids of at most 200


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    """The real service behind the gateway."""
    async with real_stack(OutageStore(), FakeClock()) as running:
        yield running


def _event(**changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "track", "event": "Viewed", "anonymousId": "anon-1"}
    return {**event, **changes}


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


async def _refusal(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/v1/t", json=body, headers=KEY)
    assert response.status_code == 400, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == "INVALID_EVENT"
    return error


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (_event(context={"page": {"url": TOO_LONG}}), "context.page.url"),
        (_event(context={"geo": {"postalCode": TOO_LONG}}), "context.geo.postalCode"),
        (_event(context={"vendorIds": {"gaClientId": TOO_LONG}}), "context.vendorIds.gaClientId"),
        (_event(context={"vendor_ids": {"GCLID": TOO_LONG}}), "context.vendor_ids.GCLID"),
    ],
)
async def test_a_refused_event_field_is_named_as_the_body_spelled_it(
    stack: Stack, body: dict[str, Any], field: str
) -> None:
    """Top-level, nested context and vendorIds fields: the body's key and case, no ``event.``."""
    error = await _refusal(stack.client, body)
    assert error["field"] == field
    assert error["message"] == f"invalid event: {field}: is longer than 8192 characters."


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (_event(anonymousId=ID_TOO_LONG), "anonymousId"),
        (_event(anonymous_id=ID_TOO_LONG, anonymousId=None), "anonymous_id"),
    ],
)
async def test_an_anonymous_id_over_the_limit_is_named_as_the_body_spelled_it(
    stack: Stack, body: dict[str, Any], field: str
) -> None:
    """The service's limit (200), refused by the gateway before the RPC, in the same words.

    Until session 20 the gateway delivered it, and the service took ids up to 8192
    characters that ``/v1/enrich`` and ``/v1/consent`` then refused.
    """
    error = await _refusal(stack.client, body)
    assert error["field"] == field
    assert error["message"] == f"{field}: {ANONYMOUS_ID_TOO_LONG}"
    assert f"longer than {MAX_ANONYMOUS_ID} characters" in error["message"]


async def test_keys_below_properties_are_the_bodys_own(stack: Stack) -> None:
    """A Struct's path is the body's keys as sent, below the body's name for the Struct."""
    error = await _refusal(stack.client, _event(properties={"productInfo": _nested(11)}))
    path = "properties.productInfo" + ".a" * 9
    assert error["field"] == path
    assert error["message"] == f"invalid event: {path}: is nested deeper than 10 levels."


async def test_a_refused_batch_item_is_named_by_its_index(stack: Stack) -> None:
    """As the gateway's own checks name it: ``batch[1].`` and the body's names, in ``field`` too."""
    body = {
        "batch": [
            _event(messageId="m-0"),
            _event(messageId="m-1", context={"page": {"url": TOO_LONG}}),
            _event(messageId="m-2", userId=1),
            _event(messageId="m-3", anonymous_id=ID_TOO_LONG, anonymousId=None),
        ]
    }
    response = await stack.client.post("/v1/batch", json=body, headers=KEY)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert results[0] == {"messageId": "m-0", "ok": True}
    assert results[1] == {
        "messageId": "m-1",
        "ok": False,
        "code": "INVALID_EVENT",
        "error": "invalid event: batch[1].context.page.url: is longer than 8192 characters.",
        "field": "batch[1].context.page.url",
    }
    # The gateway's own check of the next item, for comparison.
    assert results[2]["error"] == "batch[2].userId: must be a string."
    assert results[2]["field"] == "batch[2].userId"
    # The anonymous id's limit, the service's, checked by the gateway: as this item spelled it.
    assert results[3] == {
        "messageId": "m-3",
        "ok": False,
        "code": "INVALID_EVENT",
        "error": f"batch[3].anonymous_id: {ANONYMOUS_ID_TOO_LONG}",
        "field": "batch[3].anonymous_id",
    }


async def test_consented_at_is_named_as_the_body_spelled_it(stack: Stack) -> None:
    """RecordConsent's ``consented_at`` is the body's ``consentedAt``, in field and message."""
    ahead = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    body = {"anonymousId": "anon-1", "consent": {"functional": True}, "consentedAt": ahead}
    response = await stack.client.post("/v1/consent", json=body, headers=KEY)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("INVALID_CONSENT", "consentedAt")
    assert error["message"].startswith("invalid consent: consentedAt: must lie between")
    assert "consented_at" not in error["message"]
