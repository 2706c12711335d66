"""Control endpoints under ``/_sandbox/`` (no authentication).

- ``POST /_sandbox/reset`` → ``{"reset": true}``: back to the data file's state.
- ``POST /_sandbox/flush`` → ``{"applied": N}``: pending profile updates applied now.
- ``POST /_sandbox/tokens`` ``{tenant, scopes, ttl_seconds}`` → ``{"token": "..."}``
  (any tenant name, negative ``ttl_seconds`` for an expired token).
- ``GET /_sandbox/faults`` → ``{"faults": [...]}``; ``POST /_sandbox/faults`` (see
  :mod:`.faults`) → ``{"fault": {...}}``; ``DELETE /_sandbox/faults`` → ``{"cleared": N}``.
- ``POST /_sandbox/release`` → ``{"released": N}``: every request a ``hold`` fault keeps
  goes on (N may be 0).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from amperity_signal.sandbox import jsonbody
from amperity_signal.sandbox.faults import FaultSpecError
from amperity_signal.sandbox.state import SandboxState
from amperity_signal.sandbox.tokens import mint_token

# A token's exp must stay a number a float can hold: with ttl_seconds 10**400 the token
# was minted, then every request sending it was a 500 (OverflowError in verify_token).
MAX_TTL = 100 * 365 * 24 * 3600


class ControlRoutes:
    """Reset, flush, token minting, fault injection and release, bound to the sandbox state."""

    def __init__(self, state: SandboxState) -> None:
        self._state = state

    def routes(self) -> list[Route]:
        """The Starlette routes of the controls."""
        return [
            Route("/_sandbox/reset", self.reset, methods=["POST"]),
            Route("/_sandbox/flush", self.flush, methods=["POST"]),
            Route("/_sandbox/tokens", self.tokens, methods=["POST"]),
            Route("/_sandbox/faults", self.faults, methods=["GET", "POST", "DELETE"]),
            Route("/_sandbox/release", self.release, methods=["POST"]),
        ]

    async def reset(self, request: Request) -> Response:
        """Restores the data file's state and forgets requests, events and faults."""
        self._state.reset()
        return JSONResponse({"reset": True})

    async def flush(self, request: Request) -> Response:
        """Applies every pending profile update immediately."""
        return JSONResponse({"applied": self._state.flush()})

    async def release(self, request: Request) -> Response:
        """Lets every request a ``hold`` fault keeps go on; the hold faults stay."""
        return JSONResponse({"released": self._state.holds.release()})

    async def tokens(self, request: Request) -> Response:
        """Mints a token signed with the sandbox's secret."""
        body = await _json_object(request)
        if isinstance(body, Response):
            return body
        tenant, scopes, ttl = body.get("tenant"), body.get("scopes"), body.get("ttl_seconds", 3600)
        if not isinstance(tenant, str) or not tenant:
            return _bad("tenant: a tenant id string")
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            return _bad('scopes: a list such as ["stream:write"] or ["profile:read"]')
        if not isinstance(ttl, int | float) or isinstance(ttl, bool) or abs(ttl) > MAX_TTL:
            return _bad(
                f"ttl_seconds: seconds, at most {MAX_TTL} (100 years); negative for an "
                "expired token"
            )
        token = mint_token(
            self._state.data.signing_secret, tenant, scopes, ttl, self._state.clock()
        )
        return JSONResponse({"token": token})

    async def faults(self, request: Request) -> Response:
        """Lists, adds or clears injected faults."""
        injector = self._state.faults
        if request.method == "GET":
            return JSONResponse({"faults": [fault.to_json() for fault in injector.active()]})
        if request.method == "DELETE":
            return JSONResponse({"cleared": injector.clear()})
        # Every field's range is checked, so a NaN or 1e309 is refused naming its field.
        body = await _json_object(request, non_finite=True)
        if isinstance(body, Response):
            return body
        try:
            fault = injector.add(body)
        except FaultSpecError as problem:
            return _bad(str(problem))
        return JSONResponse({"fault": fault.to_json()})


async def _json_object(request: Request, *, non_finite: bool = False) -> dict[str, Any] | Response:
    """The body's JSON object, or the 400 saying what is wrong with it."""
    try:
        body = jsonbody.loads(await request.body(), non_finite=non_finite)
    except ValueError as error:
        # What the parser found (a NaN, a lone surrogate and where): "send a JSON object"
        # alone was the answer to an object whose one value was refused.
        return _bad(f"the body is not JSON the sandbox takes: {error}")
    return body if isinstance(body, dict) else _bad("send a JSON object")


def _bad(message: str) -> Response:
    return JSONResponse({"status": 400, "message": message}, status_code=400)
