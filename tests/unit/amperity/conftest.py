"""Fixtures for the Amperity client tests: an integration with canary keys, metrics, clients.

The keys are JWT-shaped canaries: tests scan every error, repr and log for them.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from amperity_signal.amperity import AmperityClient, MemoryRateLimiter
from amperity_signal.config import IntegrationSettings
from amperity_signal.metrics import Metrics

INGEST_CANARY = "eyJhbGciOiJIUzI1NiJ9.eyJzY29wZSI6ImluZ2VzdCJ9.CANARY-INGEST-7f3a9c"
PROFILE_CANARY = "eyJhbGciOiJIUzI1NiJ9.eyJzY29wZSI6InByb2ZpbGUifQ.CANARY-PROFILE-51be02"

ClientFactory = Callable[..., AmperityClient]


@pytest.fixture
def canaries() -> tuple[str, str]:
    """The ingest and profile key values, to scan outputs for."""
    return INGEST_CANARY, PROFILE_CANARY


@pytest.fixture
def integration() -> IntegrationSettings:
    """An integration for tenant ``acme`` with both keys, a stream and a collection."""
    return IntegrationSettings.model_validate(
        {
            "id": "acme-web",
            "pipeline_key": "pk_live_acme",
            "tenant_subdomain": "acme",
            "tenant_id": "acme-tenant",
            "api_key": INGEST_CANARY,
            "event_stream_id": "esm-abc123",
            "source_value": "datafly",
            "profile_api_key": PROFILE_CANARY,
            "profile_collection_id": "apc-vPsQheAm",
            "max_retries": 3,
            "request_timeout": 10.0,
        }
    )


@pytest.fixture
def metrics() -> Metrics:
    """A fresh metrics registry."""
    return Metrics()


@pytest.fixture
async def make_client(
    integration: IntegrationSettings, metrics: Metrics
) -> AsyncIterator[ClientFactory]:
    """Build clients over an ``httpx.MockTransport`` (or any transport); closed afterwards.

    Keyword arguments are passed to ``AmperityClient``; ``handler`` becomes a MockTransport,
    ``integration`` overrides the fixture's, and the limiter defaults to a memory one on the
    same clock and sleep as the client.
    """
    clients: list[AmperityClient] = []

    def build(
        handler: Callable[[httpx.Request], Any] | None = None,
        *,
        integration: IntegrationSettings = integration,
        **kwargs: Any,
    ) -> AmperityClient:
        if handler is not None:
            kwargs["transport"] = httpx.MockTransport(handler)
        kwargs.setdefault("metrics", metrics)
        kwargs.setdefault("rng", random.Random(7))
        clock_and_sleep = {k: kwargs[k] for k in ("clock", "sleep") if k in kwargs}
        kwargs.setdefault("limiter", MemoryRateLimiter(**clock_and_sleep))
        client = AmperityClient(integration, **kwargs)
        clients.append(client)
        return client

    yield build
    for client in clients:
        await client.aclose()
