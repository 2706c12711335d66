"""Helpers for the enrichment end-to-end tests: events, partner-call counts, Redis restarts."""

from __future__ import annotations

from typing import Any

from datafly.amperity.v1 import amperity_service_pb2 as pb
from tests.e2e.stack import Sandbox, Service, Stack
from tests.support import message_id

RPC_TIMEOUT = 15.0
"""Seconds every RPC in these tests may take (deadlines keep a hung call from hanging CI)."""

PERSONALISATION = {
    "personalisation_enabled": True,
    "personalisation_context_mappings": [
        {"source": "properties.category", "target": "pageCategory"}
    ],
}
"""Integration overrides: the page category sent as ``pageCategory``."""


def event(
    anonymous_id: str,
    *,
    traits: dict[str, Any] | None = None,
    properties: dict[str, Any] | None = None,
    **fields: Any,
) -> pb.Event:
    """A track event for one visitor (``type``/``event`` overridable)."""
    fields.setdefault("type", "track")
    fields.setdefault("event", "Product Viewed")
    message = pb.Event(message_id=message_id(), anonymous_id=anonymous_id, **fields)
    if traits:
        message.traits.update(traits)
    if properties:
        message.properties.update(properties)
    return message


async def enrich(service: Service, sent: pb.Event) -> pb.EnrichResponse:
    """``Enrich`` for the default integration ``web``."""
    request = pb.EnrichRequest(integration_id="web", event=sent)
    return await service.stub.Enrich(request, timeout=RPC_TIMEOUT)


async def deliver(service: Service, sent: pb.Event) -> pb.DeliverResponse:
    """``Deliver`` through the default integration ``web``."""
    request = pb.DeliverRequest(integration_id="web", event=sent)
    return await service.stub.Deliver(request, timeout=RPC_TIMEOUT)


async def partner_calls(sandbox: Sandbox) -> tuple[int, int]:
    """Profile API requests the sandbox received: (keychain lookups, profile GETs)."""
    by_kind = (await sandbox.stats())["by_kind"]
    return int(by_kind.get("lookup", 0)), int(by_kind.get("profile", 0))


async def serve(stack: Stack, sandbox: Sandbox, *tables: dict[str, Any], **options: Any) -> Service:
    """``stack.service`` without the HTTP gateway: these tests speak gRPC only."""
    return await stack.service(sandbox, *tables, args=("--no-gateway",), **options)


async def rate_limited_sandbox(stack: Stack, limit: int) -> Sandbox:
    """A sandbox admitting ``limit`` requests/s per tenant (``sandbox --rate-limit``)."""
    return await stack.sandbox("--rate-limit", str(limit))
