"""The gRPC health service (``grpc.health.v1.Health``): Check, Watch and List.

grpc_health's own servicer has no way to end its Watch streams, which never end by
themselves: a stop with anyone watching (a load balancer, a sidecar) waited out its whole
grace period after the work in flight was done. This one speaks the same messages and,
on stop, first tells every watcher NOT_SERVING (``enter_graceful_shutdown``), then ends
their watches (``end_watches``) so the server stops as soon as the real RPCs are answered.

A watcher that has stopped reading (its stream's flow-control window full) never takes
NOT_SERVING, so its watch cannot end by itself: ``Service.stop`` gives every watcher
``inflight.FAREWELL_SECONDS`` to take it, then cancels the watches still open as soon as
no other call is left.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from amperity_signal.errors import ServiceStopping
from amperity_signal.service.status import to_grpc_status, unknown_health_service

# types-grpcio-health-checking predates List: its two messages are looked up untyped.
_LIST_MESSAGES: Any = health_pb2
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


class HealthServicer(health_pb2_grpc.HealthServicer):
    """Serving statuses by service name ("" is the whole server), checked and watched."""

    def __init__(self) -> None:
        self._statuses: dict[str, int] = {"": SERVING}
        # One event per open watch, set when a status changes or the watches end.
        self._watchers: set[asyncio.Event] = set()
        self._shutting_down = False
        self._watches_ended = False

    async def set(self, service: str, status: int) -> None:
        """Set a service's status; ignored once the server is shutting down."""
        if not self._shutting_down:
            self._set(service, status)

    async def enter_graceful_shutdown(self) -> None:
        """Every service NOT_SERVING from now on; watchers are told at once."""
        self._shutting_down = True
        for service in self._statuses:
            self._set(service, NOT_SERVING)

    def end_watches(self) -> None:
        """End every watch once it has sent the status it last saw; new ones end at once.

        Each ends UNAVAILABLE (``SERVICE_STOPPING``): a watcher goes to another replica,
        or comes back to this one restarted. Called after ``enter_graceful_shutdown``, so
        the last status a watcher receives is NOT_SERVING.
        """
        self._watches_ended = True
        for changed in self._watchers:
            changed.set()

    def _set(self, service: str, status: int) -> None:
        self._statuses[service] = status
        for changed in self._watchers:
            changed.set()

    async def Check(  # noqa: N802 - the RPC name is fixed by grpc.health.v1
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> health_pb2.HealthCheckResponse:
        """The service's status; NOT_FOUND for a service this server does not know."""
        status = self._statuses.get(request.service)
        if status is None:
            await context.abort_with_status(unknown_health_service(request.service, self._statuses))
        return health_pb2.HealthCheckResponse(status=status)

    async def List(  # noqa: N802
        self, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Any:
        """Every known service's status (a ``HealthListResponse``)."""
        response = _LIST_MESSAGES.HealthListResponse()
        for service, status in self._statuses.items():
            response.statuses[service].status = status
        return response

    async def Watch(  # noqa: N802
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        """The service's status now and at every change (SERVICE_UNKNOWN while unknown)."""
        changed = asyncio.Event()
        self._watchers.add(changed)
        try:
            sent: int | None = None
            while True:
                # Cleared before reading: a change while the answer is being sent sets it
                # again, and the next turn sends the newer status.
                changed.clear()
                status = self._statuses.get(request.service, SERVICE_UNKNOWN)
                if status != sent:
                    yield health_pb2.HealthCheckResponse(status=status)
                    sent = status
                    continue
                if self._watches_ended:
                    break
                await changed.wait()
        finally:
            self._watchers.discard(changed)
        await context.abort_with_status(to_grpc_status(_STOPPING))


_STOPPING = ServiceStopping(
    "the service is shutting down and its last health status was NOT_SERVING; watch "
    "another replica's health, or watch this one again once it has restarted."
)
