"""The service in-process on a real gRPC channel; Amperity is the sandbox app, in-process.

The sandbox speaks HTTP through ``httpx.ASGITransport``, so every byte the Amperity client
sends goes through the same routes a real sandbox process serves.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import httpx
import pytest

from amperity_signal.sandbox import SandboxApp, create_app
from amperity_signal.service.app import Deps, build_server
from datafly.amperity.v1 import amperity_service_pb2_grpc as pb_grpc
from tests.contract.harness import SANDBOX_URL, Harness
from tests.support import Keys, integration_dict, mint_keys, settings_for


@pytest.fixture
def keys() -> Keys:
    """Fresh sandbox keys for this test."""
    return mint_keys()


@pytest.fixture
async def make_harness(keys: Keys) -> AsyncIterator[Callable[..., Any]]:
    """Start a service for the given integrations and ``[server]`` table; stopped after."""
    started: list[Harness] = []

    async def make(
        *extra: dict[str, Any], server: dict[str, Any] | None = None, **overrides: Any
    ) -> Harness:
        app = create_app(profile_delay=0.0, seed=7)
        assert isinstance(app, SandboxApp)
        integrations = extra or (integration_dict(SANDBOX_URL, keys, **overrides),)
        listen = {"grpc_address": "127.0.0.1:0", "http_address": "127.0.0.1:0"}
        settings = settings_for(*integrations, server={**listen, **(server or {})})
        service = build_server(settings, Deps(transport=httpx.ASGITransport(app=app)))
        await service.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{service.port}")
        harness = Harness(
            service=service,
            stub=pb_grpc.AmperityServiceStub(channel),
            channel=channel,
            sandbox=app,
            inspector=httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url=SANDBOX_URL
            ),
            keys=keys,
            settings=settings,
        )
        started.append(harness)
        return harness

    yield make
    for h in started:
        await h.channel.close()
        await h.inspector.aclose()
        await h.service.stop(0)


@pytest.fixture
async def harness(make_harness: Callable[..., Any]) -> Harness:
    """A service with one retail integration against the default sandbox tenant."""
    made: Harness = await make_harness()
    return made
