"""Read-only inspector endpoints under ``/_sandbox/`` (no authentication).

- ``GET /_sandbox/requests?path_prefix=&tenant=&limit=`` → ``{"requests": [...]}``, newest
  last, each ``{request_id, timestamp, time, method, path, query, kind, tenant, headers,
  status, dropped, body_cut, message_id, duration_ms}`` (``Authorization`` as
  ``Bearer <fp:…>``; ``message_id`` an event POST's, else null).
- ``GET /_sandbox/in_flight`` → ``{"requests": [...]}``, oldest first: the requests arrived
  and not yet answered (a hold or a latency keeps them), each as ``requests`` lists it
  without its answer: ``{request_id, timestamp, time, method, path, query, kind, tenant,
  headers, message_id}``.
- ``GET /_sandbox/events?stream=&tenant=&limit=`` → ``{"events": [...]}``, each ``{stream,
  tenant, received_at, status, mode, routed_to, body}``.
- ``GET /_sandbox/stats`` → ``{total, by_kind, by_status, throttled, dropped, body_cut,
  pending_updates, tenants: {id: {total, by_kind, by_status, throttled, dropped, body_cut}}}``.
- ``GET /_sandbox/profiles?collection=&tenant=`` → ``{"profiles": [...]}`` in the wire shape,
  plus ``tenant``.
"""

from __future__ import annotations

import sys

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from amperity_signal.sandbox.state import SandboxState

DEFAULT_LIMIT = 1000
_MAX_LIMIT_DIGITS = 18


class InspectorRoutes:
    """The inspector's read endpoints, bound to the sandbox state."""

    def __init__(self, state: SandboxState) -> None:
        self._state = state

    def routes(self) -> list[Route]:
        """The Starlette routes of the inspector."""
        return [
            Route("/_sandbox/requests", self.requests, methods=["GET"]),
            Route("/_sandbox/in_flight", self.in_flight, methods=["GET"]),
            Route("/_sandbox/events", self.events, methods=["GET"]),
            Route("/_sandbox/stats", self.stats, methods=["GET"]),
            Route("/_sandbox/profiles", self.profiles, methods=["GET"]),
        ]

    async def requests(self, request: Request) -> Response:
        """Recent API requests, optionally filtered by path prefix and tenant."""
        prefix = request.query_params.get("path_prefix", "")
        tenant = request.query_params.get("tenant")
        limit = _limit(request)
        if isinstance(limit, Response):
            return limit
        records = [
            record.to_json()
            for record in self._state.requests.items()
            if record.path.startswith(prefix) and tenant in (None, record.tenant)
        ]
        return JSONResponse({"requests": records[-limit:]})

    async def in_flight(self, request: Request) -> Response:
        """The API requests arrived and not yet answered, oldest first."""
        records = [record.arrival_json() for record in self._state.in_flight.values()]
        return JSONResponse({"requests": records})

    async def events(self, request: Request) -> Response:
        """Event bodies received per stream and where routing sent them."""
        stream = request.query_params.get("stream")
        tenant = request.query_params.get("tenant")
        limit = _limit(request)
        if isinstance(limit, Response):
            return limit
        records = [
            record.to_json()
            for record in self._state.events.items()
            if stream in (None, record.stream_id) and tenant in (None, record.tenant)
        ]
        return JSONResponse({"events": records[-limit:]})

    async def stats(self, request: Request) -> Response:
        """Counters by endpoint kind, status and tenant since start or reset."""
        body = self._state.stats.to_json()
        body["pending_updates"] = self._state.pending_updates()
        return JSONResponse(body)

    async def profiles(self, request: Request) -> Response:
        """Every live profile, optionally of one collection or tenant."""
        collection_id = request.query_params.get("collection")
        tenant = request.query_params.get("tenant")
        profiles = [
            {**profile.to_json(), "tenant": tenant_id}
            for tenant_id, collection in self._state.all_collections()
            if collection_id in (None, collection.collection.collection_id)
            and tenant in (None, tenant_id)
            for profile in collection.all()
        ]
        return JSONResponse({"profiles": profiles})


def _limit(request: Request) -> int | Response:
    """``limit``: a positive whole number (past the log's size: all), the default when absent.

    Anything else is a 400 naming ``limit``: ``-1``, ``abc`` or ``1.5`` silently showed
    the default 1000, as if asked for. ``str.isdigit`` alone let ``²`` and 5000-digit
    numbers through to ``int``: a 500.
    """
    raw = request.query_params.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    if not (raw.isascii() and raw.isdigit()) or not raw.strip("0"):
        message = (
            f"limit must be a whole number of 1 or more (the newest records to show; "
            f"{DEFAULT_LIMIT} when left out), not {raw[:20]!r}"
        )
        return JSONResponse({"status": 400, "message": message}, status_code=400)
    return int(raw) if len(raw) <= _MAX_LIMIT_DIGITS else sys.maxsize
