"""Composes the sandbox's Starlette application from its parts."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Scope

from amperity_signal.sandbox.controls import ControlRoutes
from amperity_signal.sandbox.data import SandboxData, default_data
from amperity_signal.sandbox.edge import SandboxEdge
from amperity_signal.sandbox.inspector import InspectorRoutes
from amperity_signal.sandbox.responses import error
from amperity_signal.sandbox.routes_ingest import IngestRoutes
from amperity_signal.sandbox.routes_profile import ProfileRoutes
from amperity_signal.sandbox.state import SandboxState


class SandboxApp(Starlette):
    """A Starlette app whose outermost layer is the :class:`SandboxEdge`.

    The edge sits outside Starlette's own error middleware so it records every status,
    500s included, and holds the server's ``receive`` to drop connections.
    """

    def __init__(
        self,
        state: SandboxState,
        routes: Sequence[BaseRoute],
        lifespan: Callable[[Starlette], contextlib.AbstractAsyncContextManager[None]],
    ) -> None:
        super().__init__(
            routes=routes,
            lifespan=lifespan,
            exception_handlers={HTTPException: _http_error, Exception: _internal_error},
        )
        self.sandbox = state
        # Amperity answers a path it does not serve with 404; Starlette would redirect
        # /prof/events/{id}/ to the path without the slash (a 307 no client expects).
        self.router.redirect_slashes = False

    def build_middleware_stack(self) -> ASGIApp:
        """Starlette's stack, wrapped in the sandbox edge."""
        return SandboxEdge(super().build_middleware_stack(), self.sandbox, self.allowed_methods)

    def allowed_methods(self, scope: Scope) -> str:
        """The ``Allow`` value for the request's path: the methods its route takes.

        Every 405 carries it (RFC 9110, section 15.5.6), the router's and an injected
        one's alike. Sorted, so that it reads the same in every process (Starlette keeps a
        route's methods in a set). Empty for a path the sandbox does not serve, which HTTP
        allows: the resource takes no method.
        """
        for route in self.router.routes:
            if isinstance(route, Route) and route.methods:
                match, _ = route.matches(scope)
                if match is not Match.NONE:
                    return ", ".join(sorted(route.methods))
        return ""


# What a 404 or 405 of the router tells the caller to do instead.
_ROUTER_HINTS = {
    404: "no such path; the Real-time API serves POST /prof/events/{event_stream_id}, "
    "GET or POST /prof/lookup/{collection_id}/keychain and "
    "GET /prof/profiles/{collection_id}/{profile_id}",
    405: "this path does not take that method; send one of the Allow header's",
}


async def _http_error(request: Request, problem: Exception) -> Response:
    """Starlette's own 404/405 answers, in Amperity's error shape, saying what to send."""
    if not isinstance(problem, HTTPException):
        return error(request, 500, f"{request.method} {request.url.path}: {problem}")
    headers = dict(problem.headers or {})
    hint = _ROUTER_HINTS.get(problem.status_code, problem.detail)
    if problem.status_code == 405 and isinstance(request.app, SandboxApp):
        headers["Allow"] = request.app.allowed_methods(request.scope)
        hint = f"this path takes {headers['Allow']}, not {request.method}"
    message = f"{request.method} {request.url.path}: {hint}"
    return error(request, problem.status_code, message, headers)


async def _internal_error(request: Request, problem: Exception) -> Response:
    """A bug of the sandbox's own, still in Amperity's error shape (a 500 clients retry)."""
    return error(request, 500, f"the sandbox failed: {type(problem).__name__}")


def create_app(
    data: SandboxData | None = None,
    *,
    clock: Callable[[], float] = time.time,
    profile_delay: float = 1.0,
    rate_limit_per_second: int = 500,
    seed: int | None = None,
) -> Starlette:
    """Builds a sandbox tenant server as an ASGI app.

    Args:
        data: Tenants, tokens, streams and collections; the shipped default when None.
        clock: Epoch seconds; timestamps, token expiry and the rate limit window use it.
        profile_delay: Seconds between a 202 and the profile update (0 = immediately).
        rate_limit_per_second: Requests admitted per tenant in any one-second window.
        seed: Seed of the random generator behind ids and fault draws (None = random).

    Returns:
        The application; its state is at ``app.sandbox`` (a :class:`SandboxState`).
    """
    state = SandboxState(
        data if data is not None else default_data(),
        clock=clock,
        profile_delay=profile_delay,
        rate_limit_per_second=rate_limit_per_second,
        seed=seed,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        try:
            yield
        finally:
            state.close()

    routes: list[BaseRoute] = [
        *IngestRoutes(state).routes(),
        *ProfileRoutes(state).routes(),
        *InspectorRoutes(state).routes(),
        *ControlRoutes(state).routes(),
    ]
    return SandboxApp(state, routes, lifespan)
