"""The gateway benchmark's server: the bare route in front of a gateway uvicorn can serve."""

from __future__ import annotations

import grpc.aio
import httpx

from amperity_signal.gateway import GatewaySettings, create_gateway_app
from amperity_signal.gateway.server import ClosingWhenDraining, gateway_server
from tests.benchmarks.gateway_serve import BARE_BODY, BARE_PATH, with_bare_route


def _no_channel() -> grpc.aio.Channel:
    raise AssertionError("the routes asked for here make no RPC")


async def test_the_bare_route_rides_in_front_of_a_gateway_server_can_serve() -> None:
    """gateway_server accepts the wrapped app (it reads the gateway's state); both routes answer."""
    gateway = create_gateway_app(settings=GatewaySettings(), channel_factory=_no_channel)
    app = with_bare_route(gateway)
    transport = httpx.ASGITransport(app=app)
    served = gateway_server(app, GatewaySettings()).config.app
    assert isinstance(served, ClosingWhenDraining)
    assert served.app is app
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
        bare = await client.get(BARE_PATH)
        healthy = await client.get("/healthz")
    assert bare.json() == BARE_BODY
    assert healthy.status_code == 200
