"""The service in-process on a real gRPC channel, the sandbox app behind httpx in-process.

Fast enough for thousands of fuzz cases: no process starts, yet every request goes through
the generated stub, the interceptors, the servicer and the Amperity client's HTTP calls.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from amperity_signal.sandbox import SandboxApp, create_app
from amperity_signal.service.app import Deps, build_server
from datafly.amperity.v1 import amperity_service_pb2_grpc as pb_grpc
from tests.support import integration_dict, mint_keys, settings_for

SANDBOX_URL = "http://sandbox.test"


@dataclass
class InProcess:
    """A running in-process service and its stub."""

    stub: pb_grpc.AmperityServiceAsyncStub
    channel: grpc.aio.Channel
    sandbox: SandboxApp


@asynccontextmanager
async def inprocess_service(**server: Any) -> AsyncIterator[InProcess]:
    """Start the service against an in-process sandbox; stop it on exit."""
    # No sandbox rate limit: fuzz cases come faster than a tenant's 500/s would allow.
    app = create_app(profile_delay=0.0, seed=7, rate_limit_per_second=1_000_000)
    assert isinstance(app, SandboxApp)
    table = integration_dict(SANDBOX_URL, mint_keys(), rate_limit_per_second=10_000)
    settings = settings_for(
        table, server={"grpc_address": "127.0.0.1:0", "http_address": "127.0.0.1:0", **server}
    )
    service = build_server(settings, Deps(transport=httpx.ASGITransport(app=app)))
    await service.start()
    channel = grpc.aio.insecure_channel(
        f"127.0.0.1:{service.port}",
        options=[("grpc.max_send_message_length", 8 * 1024 * 1024)],
    )
    try:
        yield InProcess(stub=pb_grpc.AmperityServiceStub(channel), channel=channel, sandbox=app)
    finally:
        await channel.close()
        await service.stop(0)


def bad_request_fields(error: grpc.aio.AioRpcError) -> list[str]:
    """The fields named by the status's BadRequest detail (empty when there is none)."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    if status is None:
        return []
    fields: list[str] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields.extend(v.field for v in bad.field_violations)
    return fields
