"""``amperity-signal serve`` with one extra route for the gateway benchmark.

``python -m tests.benchmarks.gateway_serve serve --config ...`` runs the real CLI, but the
gateway app is wrapped in an outer ASGI dispatcher that sends ``/bench/bare`` to a plain
Starlette route answering a fixed JSON body; everything else reaches the gateway untouched
(the per-IP rate limit is raised out of the way: all benchmark load comes from one IP).
The bare route therefore rides the same uvicorn server, process and event loop.
"""

from __future__ import annotations

import sys
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from amperity_signal.cli import main
from amperity_signal.gateway import embedded

BARE_PATH = "/bench/bare"
BARE_BODY = {
    "provider": "amperity",
    "attributes": {"Persona": "Value Hunter", "LifetimeTier": "Gold"},
}


async def _bare(request: Request) -> Response:
    return JSONResponse(BARE_BODY)


class _WithBareRoute:
    """An ASGI app sending ``BARE_PATH`` to the bare route and the rest to the gateway.

    It carries the gateway's ``state``: ``gateway_server`` reads ``end_streams`` from it.
    """

    def __init__(self, gateway: Any) -> None:
        self._gateway = gateway
        self._bare = Starlette(routes=[Route(BARE_PATH, _bare)])
        self.state = gateway.state

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == BARE_PATH:
            await self._bare(scope, receive, send)
        else:
            await self._gateway(scope, receive, send)


def with_bare_route(gateway: Any) -> Any:
    """The gateway app with the bare route in front of it (``_WithBareRoute``)."""
    return _WithBareRoute(gateway)


def _wrapped(create: Any) -> Any:
    def create_with_bare_route(*args: Any, **kwargs: Any) -> Any:
        # The per-IP limiter (20/s by default) still runs, so its cost is measured, but all
        # the benchmark's load comes from one IP: it must never refuse.
        kwargs["settings"] = kwargs["settings"].replace(
            rate_limit_per_second=1e9, rate_limit_burst=10**9
        )
        return with_bare_route(create(*args, **kwargs))

    return create_with_bare_route


if __name__ == "__main__":
    # The embedded gateway looks the factory up in its own module namespace at start.
    setattr(embedded, "create_gateway_app", _wrapped(getattr(embedded, "create_gateway_app")))  # noqa: B009, B010
    sys.exit(main())
