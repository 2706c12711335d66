"""The contract-test harness: a running service, its stub, and its sandbox."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
import httpx

from amperity_signal.config import Settings
from amperity_signal.sandbox import SandboxApp
from amperity_signal.service.app import Service
from datafly.amperity.v1 import amperity_service_pb2_grpc as pb_grpc
from tests.support import Keys

SANDBOX_URL = "http://sandbox.test"


@dataclass
class Harness:
    """A running service, its stub, and the sandbox it talks to."""

    service: Service
    stub: pb_grpc.AmperityServiceAsyncStub
    channel: grpc.aio.Channel
    sandbox: SandboxApp
    inspector: httpx.AsyncClient
    keys: Keys
    settings: Settings
