"""``POST /prof/events/{event_stream_id}``: realtime event ingest.

Checks in order (the first failing one answers), after the edge's 411 (no
``Content-Length``) and 413 (body over 65536 bytes) of :mod:`.framing`: 401/403/429 (see
:mod:`.auth`) → 404 unknown tenant or stream → 415 ``Content-Type`` not
``application/json`` (parameters allowed) → 400 body missing, malformed, or not one JSON
object → 409 stream in reject mode → 204 stream in drop mode → 202 accepted. An accepted
event whose ``source`` misses the stream's routing expression is routed to ``_unknown``
and never reaches a profile.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from amperity_signal.sandbox import jsonbody
from amperity_signal.sandbox.auth import authorize
from amperity_signal.sandbox.data import Stream
from amperity_signal.sandbox.errors import RefusalError
from amperity_signal.sandbox.records import EventRecord
from amperity_signal.sandbox.responses import error, ids
from amperity_signal.sandbox.state import SandboxState
from amperity_signal.sandbox.tokens import STREAM_WRITE

UNKNOWN_ROUTE = "_unknown"


class IngestRoutes:
    """The event ingest endpoint, bound to the sandbox state."""

    def __init__(self, state: SandboxState) -> None:
        self._state = state

    def routes(self) -> list[Route]:
        """The Starlette routes of event ingest."""
        return [Route("/prof/events/{event_stream_id}", self.post_event, methods=["POST"])]

    async def post_event(self, request: Request) -> Response:
        """Accepts one event for a stream, answering as Amperity's realtime ingest does."""
        try:
            tenant_id, stream, event = await self._check(request)
        except RefusalError as refusal:
            return error(request, refusal.status, refusal.message)
        if stream.mode == "reject":
            self._record(tenant_id, stream, event, status=409, routed_to=None)
            return error(request, 409, f"event stream {stream.stream_id} is in Reject mode")
        if stream.mode == "drop":
            self._record(tenant_id, stream, event, status=204, routed_to=None)
            return Response(status_code=204)
        routed_to = stream.target if stream.routing.matches(event) else UNKNOWN_ROUTE
        self._record(tenant_id, stream, event, status=202, routed_to=routed_to)
        if routed_to != UNKNOWN_ROUTE:
            self._state.accept_event(tenant_id, event)
        return JSONResponse({"status": 202, **ids(request.scope)}, status_code=202)

    async def _check(self, request: Request) -> tuple[str, Stream, dict[str, Any]]:
        """``(tenant_id, stream, event)`` of an acceptable request.

        Raises:
            RefusalError: The first check that fails, in the module docstring's order.
        """
        claims = authorize(self._state, request, STREAM_WRITE)
        tenant = self._state.tenant(claims.tenant)
        stream_id = request.path_params["event_stream_id"]
        stream = None if tenant is None else tenant.streams.get(stream_id)
        if stream is None:
            raise RefusalError(404, f"no event stream {stream_id!r} for tenant {claims.tenant!r}")
        jsonbody.require_json_media_type(request.headers.get("content-type", ""))
        return claims.tenant, stream, _parse_event(await request.body())

    def _record(
        self,
        tenant_id: str,
        stream: Stream,
        event: dict[str, Any],
        *,
        status: int,
        routed_to: str | None,
    ) -> None:
        self._state.events.add(
            EventRecord(
                stream_id=stream.stream_id,
                tenant=tenant_id,
                received_at=self._state.clock(),
                status=status,
                mode=stream.mode,
                routed_to=routed_to,
                body=event,
            )
        )


def _parse_event(body: bytes) -> dict[str, Any]:
    """The event object of a body.

    Raises:
        RefusalError: 400, saying what is wrong with the body.
    """
    if not body.strip():
        raise RefusalError(400, "the body is missing: send one JSON object")
    try:
        event = jsonbody.loads(body)
    except ValueError as problem:
        raise RefusalError(
            400, f"the body is not valid JSON ({problem}): send one JSON object (no NDJSON)"
        ) from problem
    if not isinstance(event, dict):
        kind = type(event).__name__
        raise RefusalError(
            400, f"the body is a JSON {kind}, not an object: send one event per request"
        )
    return event
