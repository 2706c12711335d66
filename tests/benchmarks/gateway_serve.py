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


def with_bare_route(gateway: Any) -> Any:
    """An ASGI app sending ``BARE_PATH`` to the bare route and the rest to ``gateway``."""
    bare = Starlette(routes=[Route(BARE_PATH, _bare)])

    async def dispatch(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == BARE_PATH:
            await bare(scope, receive, send)
        else:
            await gateway(scope, receive, send)

    return dispatch


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
