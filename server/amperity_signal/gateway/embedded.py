"""``EmbeddedGateway``: the gateway served inside the service's own event loop.

``amperity-signal serve`` runs the gRPC service and this gateway in one process; the
gateway still reaches the service only through the generated gRPC stub, over loopback
(``grpc_target``) or over the service's in-process channel (``channel_factory``).
"""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

from amperity_signal.config import Settings
from amperity_signal.gateway.app import create_gateway_app
from amperity_signal.gateway.backend import ChannelFactory
from amperity_signal.gateway.server import (
    GatewayServer,
    bind_socket,
    gateway_server,
    listening_url,
)
from amperity_signal.gateway.settings import GatewaySettings
from amperity_signal.metrics import Metrics


class EmbeddedGateway:
    """Start and stop the gateway as a task of the running loop.

    Args:
        settings: The service configuration (``server.http_address``, integrations).
        grpc_target: Where the service listens, e.g. ``127.0.0.1:50051``.
        channel_factory: Makes the stub's channel instead (``Service.in_process_channel``);
            exactly one of the two is required.
        metrics: The service's metrics: ``amperity_signal_gateway_seconds`` is recorded
            there and ``/metrics`` exposes them all; None gives the gateway its own.
        static_dir: Where the demo and browser client live (the packaged copy by default).
        gateway_settings: Overrides the settings derived from ``settings``.
        workers_dir: Under ``serve --workers``, where every worker's Unix socket is: Live
            Events shows the deliveries of them all.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        grpc_target: str | None = None,
        channel_factory: ChannelFactory | None = None,
        metrics: Metrics | None = None,
        static_dir: Path | None = None,
        gateway_settings: GatewaySettings | None = None,
        reuse_port: bool = False,
        workers_dir: str | None = None,
    ) -> None:
        self._workers_dir = workers_dir
        self._address = settings.server.http_address
        self._reuse_port = reuse_port
        self._settings = gateway_settings or GatewaySettings.from_settings(settings)
        self._grpc_target = grpc_target
        self._channel_factory = channel_factory
        self._metrics = metrics
        self._static_dir = static_dir
        self._server: GatewayServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None

    async def start(self) -> str:
        """Bind, start serving and return the bound ``host:port`` (port 0 resolved)."""
        self._socket = bind_socket(self._address, reuse_port=self._reuse_port)
        app = create_gateway_app(
            settings=self._settings,
            grpc_target=self._grpc_target,
            channel_factory=self._channel_factory,
            static_dir=self._static_dir,
            metrics=self._metrics,
            multiprocess_dir=os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None,
            workers_dir=self._workers_dir,
            embedded=True,
        )
        self._server = gateway_server(app, self._settings)
        self._server.reports_cut = False  # the service's line says it (``runner``)
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]))
        while not self._server.started:
            if self._task.done():
                await self._task  # surfaces the startup error
                raise RuntimeError("the gateway stopped during startup")
            await asyncio.sleep(0.01)
        return listening_url(self._socket).removeprefix("http://")

    @property
    def requests_in_flight(self) -> int:
        """The HTTP requests being handled now."""
        return 0 if self._server is None else self._server.requests_in_flight

    def force_stop(self) -> None:
        """Make a ``stop`` under way end its drain and cut the requests in flight.

        Each cut before its answer began gets a 503 with ``Connection: close`` and
        ``Retry-After`` (``GatewayServer``); the app's lifespan still ends.
        """
        if self._server is not None:
            self._server.force_exit = True

    async def stop(self) -> None:
        """Stop accepting requests, finish the ones in flight and close the socket."""
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
        if self._socket is not None:
            self._socket.close()
        self._server = self._task = self._socket = None
