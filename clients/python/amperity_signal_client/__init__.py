"""Typed Python client (asyncio and sync) for the amperity-signal gRPC service.

Quick start::

    from amperity_signal_client import AsyncAmperityClient, event_from_json

    async with AsyncAmperityClient("localhost:50051", integration_id="shop") as client:
        response = await client.deliver(event_from_json({"type": "track", ...}))

The generated messages live in ``datafly.amperity.v1.amperity_service_pb2`` (installed
with the ``amperity-signal`` package).
"""

from amperity_signal_client.client import (
    DEFAULT_CHANNEL_OPTIONS,
    DEFAULT_RETRY,
    DEFAULT_STREAM_IDLE_TIMEOUT,
    DEFAULT_TIMEOUT,
    AsyncAmperityClient,
)
from amperity_signal_client.errors import (
    AmperitySignalError,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    MessageTooLarge,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    from_delivery_error,
    from_rpc_error,
)
from amperity_signal_client.events import (
    ConsentLike,
    consent_from_json,
    dict_to_struct,
    event_from_json,
    struct_to_dict,
)
from amperity_signal_client.retry import DEFAULT_STREAM_RETRY, RetryPolicy
from amperity_signal_client.sync_client import AmperityClient

__all__ = [
    "DEFAULT_CHANNEL_OPTIONS",
    "DEFAULT_RETRY",
    "DEFAULT_STREAM_IDLE_TIMEOUT",
    "DEFAULT_STREAM_RETRY",
    "DEFAULT_TIMEOUT",
    "AmperityClient",
    "AmperitySignalError",
    "AsyncAmperityClient",
    "ConsentLike",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FieldViolation",
    "InvalidArgument",
    "MessageTooLarge",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "RetryPolicy",
    "Unauthenticated",
    "Unavailable",
    "consent_from_json",
    "dict_to_struct",
    "event_from_json",
    "from_delivery_error",
    "from_rpc_error",
    "struct_to_dict",
]
