"""Issue 9 on the gateway: Live Events in Chromium, and /metrics, embedded and standalone."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from playwright.async_api import async_playwright
from prometheus_client.parser import text_string_to_metric_families

from datafly.amperity.v1 import amperity_service_pb2 as pb
from tests.e2e.stack import Stack, require_binary
from tests.gateway.chromium import launch
from tests.support import STREAM, message_id

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
ADMIN_TOKEN = "adm-5c1e0b7d9f2a4e68-live"
KEY = {"X-Pipeline-Key": "pk_web"}


def _total(text: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include ``labels``."""
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and labels.items() <= s.labels.items()
    )


async def test_live_events_page_lists_deliveries_with_vendor_request_and_no_secret(
    stack: Stack,
) -> None:
    """/live (token → cookie) streams a collected event: input, payload, 202 vendor request."""
    chromium = require_binary("chromium")
    sandbox = await stack.sandbox()
    service = await stack.service(sandbox, server={"admin_token": ADMIN_TOKEN})
    async with httpx.AsyncClient(base_url=service.http_url) as client:
        refused = await client.get("/live")
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "ADMIN_TOKEN_REQUIRED"
        collected = await client.post(
            "/v1/t",
            headers=KEY,
            json={
                "event": "Product Added",
                "anonymousId": "anon_live_01",
                "properties": {"product_id": "SKU-1001", "price": 89, "currency": "USD"},
            },
        )
        assert collected.status_code == 200
    replayed = collected.json()["messageId"]
    ARTIFACTS.mkdir(exist_ok=True)
    console: list[str] = []
    async with async_playwright() as playwright:
        browser = await launch(playwright, chromium)
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 900})
            page = await context.new_page()
            page.on("console", lambda message: console.append(message.text))
            await page.goto(f"{service.http_url}/live?token={ADMIN_TOKEN}")
            assert page.url == f"{service.http_url}/live"
            item = page.locator(f'li.delivery[data-message-id="{replayed}"]')
            await item.wait_for(timeout=10_000)
            await page.wait_for_selector("#status[data-state=live]", timeout=10_000)
            # A delivery made while the page is open arrives live, not only by replay.
            live_event = pb.Event(message_id=message_id(), type="page", anonymous_id="anon_live_01")
            await service.stub.Deliver(pb.DeliverRequest(integration_id="web", event=live_event))
            live_item = page.locator(f'li.delivery[data-message-id="{live_event.message_id}"]')
            await live_item.wait_for(timeout=10_000)

            event_panel = await item.locator("[data-panel=event]").text_content()
            await item.locator("[data-tab=payload]").click()
            payload_panel = await item.locator("[data-panel=payload]").text_content()
            await item.locator("[data-tab=vendor]").click()
            vendor_panel = await item.locator("[data-panel=vendor]").text_content()
            assert await item.locator("[data-panel=vendor]").is_visible()
            await page.screenshot(path=str(ARTIFACTS / "live-events.png"), full_page=True)
            seen = "\n".join(
                [
                    page.url,
                    await page.content(),
                    await page.evaluate("document.cookie"),
                    json.dumps(await context.cookies()),
                    *console,
                ]
            )
        finally:
            await browser.close()

    assert event_panel is not None
    assert payload_panel is not None
    assert vendor_panel is not None
    assert json.loads(event_panel)["event"] == "Product Added"
    payload = json.loads(payload_panel)
    assert payload["type"] == "add_to_cart"
    assert payload["cookieid"] == "anon_live_01"
    assert "status: 202" in vendor_panel
    assert f"POST {sandbox.url}/prof/events/{STREAM}" in vendor_panel
    assert "authorization: bearer [redacted]" in vendor_panel.lower()
    assert "Bearer [REDACTED]" in vendor_panel  # the form the Deliver response shows
    assert "HTTP 202" in seen
    for secret in (service.keys.ingest, service.keys.profile, ADMIN_TOKEN):
        assert secret not in seen


async def test_metrics_count_deliveries_and_gateway_latency_embedded_and_standalone(
    stack: Stack,
) -> None:
    """Service /metrics counts deliveries, partner calls, /v1 latency; a lone gateway, its own."""
    sandbox = await stack.sandbox()
    service = await stack.service(sandbox)
    async with httpx.AsyncClient(base_url=service.http_url) as client:
        body = {"event": "Product Viewed", "anonymousId": "anon_alice_01"}
        assert (await client.post("/v1/t", headers=KEY, json=body)).status_code == 200
        enrich = "/v1/enrich?provider=amperity&anonymous_id=anon_alice_01"
        assert (await client.get(enrich, headers=KEY)).status_code == 200
        embedded = (await client.get("/metrics")).text
    assert _total(embedded, "amperity_signal_deliveries_total", integration="web") >= 1
    assert _total(embedded, "amperity_signal_amperity_calls_total", integration="web") >= 1
    assert _total(embedded, "amperity_signal_rpc_seconds_count") >= 2
    for route in ("/v1/t", "/v1/enrich"):
        count = _total(embedded, "amperity_signal_gateway_seconds_count", route=route)
        assert count == 1, route

    gateway = await stack.gateway(service)
    url = gateway.output_value("gateway listening on ")
    async with httpx.AsyncClient(base_url=url) as client:
        answer = await client.get(enrich, headers=KEY)
        own = (await client.get("/metrics")).text
    assert answer.status_code == 200
    assert answer.json()["attributes"]["Persona"] == "Value Hunter"
    route = "/v1/enrich"
    assert _total(own, "amperity_signal_gateway_seconds_count", route=route, status="200") == 1
    assert _total(own, "amperity_signal_deliveries_total") == 0
