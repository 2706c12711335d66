"""The gateway in front of the real service (its sandbox for Amperity), for tests of both."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from amperity_signal.config import Settings
from amperity_signal.enrich import CacheBackend
from amperity_signal.gateway import GatewaySettings, create_gateway_app
from amperity_signal.metrics import Metrics
from amperity_signal.sandbox import SandboxApp, create_app
from amperity_signal.service.app import Deps, Service, build_server
from tests.contract.harness import SANDBOX_URL
from tests.support import OutageStore, integration_dict, mint_keys, settings_for
from tests.unit.enrich.enrich_fakes import FakeClock


@dataclass
class Stack:
    """The gateway's client, the real service behind it and its sandbox."""

    client: httpx.AsyncClient
    service: Service
    sandbox: SandboxApp


@contextlib.asynccontextmanager
async def real_service(
    store: OutageStore, clock: FakeClock
) -> AsyncIterator[tuple[Service, SandboxApp, Settings]]:
    """The real service (browser_consent=functional, pipeline key ``pk_web``), started.

    Args:
        store: The service's cache store, which a test can take down.
        clock: The cache backend's clock.

    Yields:
        The service, its sandbox, and its settings (``GatewaySettings.from_settings``
        makes those of a gateway in front of it).
    """
    sandbox = create_app(profile_delay=0.0, seed=7)
    assert isinstance(sandbox, SandboxApp)
    settings = settings_for(
        integration_dict(SANDBOX_URL, mint_keys(), browser_consent="functional")
    )
    metrics = Metrics()
    cache = CacheBackend(store, metrics=metrics, clock=clock)
    deps = Deps(metrics=metrics, transport=httpx.ASGITransport(app=sandbox), cache=cache)
    service: Service = build_server(settings, deps)
    await service.start()
    try:
        yield service, sandbox, settings
    finally:
        await service.stop(0)


@contextlib.asynccontextmanager
async def real_stack(
    store: OutageStore,
    clock: FakeClock,
    *,
    embedded: bool = True,
    gateway: Mapping[str, Any] | None = None,
) -> AsyncIterator[Stack]:
    """The real service (browser_consent=functional, pipeline key ``pk_web``) behind the gateway.

    Args:
        store: The service's cache store, which a test can take down.
        clock: The cache backend's clock.
        embedded: The gateway as ``serve`` runs it, in the service's process (True), or
            as ``amperity-signal gateway`` does, with a log of its own (False).
        gateway: ``GatewaySettings`` fields to change (``batch_deadline``, ...).
    """
    async with real_service(store, clock) as (service, sandbox, settings):
        app = create_gateway_app(
            settings=GatewaySettings.from_settings(settings, **(gateway or {})),
            channel_factory=service.in_process_channel,
            embedded=embedded,
        )
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
        client = httpx.AsyncClient(transport=transport, base_url="http://gateway.test")
        try:
            async with app.router.lifespan_context(app):
                yield Stack(client, service, sandbox)
        finally:
            await client.aclose()
