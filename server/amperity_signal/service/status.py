"""The one place that knows gRPC status codes: errors in, ``google.rpc.Status`` out.

Every status carries exactly one ``ErrorInfo`` (reason, fixed domain, the message's
variables as metadata), plus ``BadRequest`` for field errors and ``RetryInfo`` when
retrying later can help (AIP-193).
"""

from __future__ import annotations

import collections
import contextvars
from collections.abc import Iterable
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from amperity_signal.errors import (
    DOMAIN,
    AmperityAuthError,
    AmperityError,
    AmperityMisconfigured,
    AmperityRejected,
    AmperitySignalError,
    AmperityUnavailable,
    CacheUnavailable,
    InvalidFields,
    MalformedRequest,
    ProfileUnavailable,
    ServiceStopping,
    UnknownIntegration,
)
from amperity_signal.logs import request_id_var
from datafly.amperity.v1 import amperity_service_pb2 as pb


# One return per error kind: the function is the mapping table, read top to bottom.
def code_for(error: AmperitySignalError) -> grpc.StatusCode:  # noqa: PLR0911
    """The gRPC status code for one of our errors."""
    if isinstance(error, InvalidFields | MalformedRequest):
        return grpc.StatusCode.INVALID_ARGUMENT
    if isinstance(error, UnknownIntegration):
        return grpc.StatusCode.NOT_FOUND
    if isinstance(error, AmperityAuthError):
        if error.status_code == 401:
            return grpc.StatusCode.UNAUTHENTICATED
        return grpc.StatusCode.PERMISSION_DENIED
    if isinstance(error, AmperityMisconfigured | ProfileUnavailable):
        return grpc.StatusCode.FAILED_PRECONDITION
    if isinstance(error, ServiceStopping | CacheUnavailable):
        return grpc.StatusCode.UNAVAILABLE
    if isinstance(error, AmperityUnavailable):
        if error.status_code == 429 or error.reason.startswith("RATE_LIMITED"):
            return grpc.StatusCode.RESOURCE_EXHAUSTED
        return grpc.StatusCode.UNAVAILABLE
    if isinstance(error, AmperityRejected):
        if error.reason == "PAYLOAD_TOO_LARGE":
            return grpc.StatusCode.INVALID_ARGUMENT
        if error.reason == "CONNECTOR_BUG":  # our request was malformed: a bug, as INTERNAL is
            return grpc.StatusCode.INTERNAL
        return grpc.StatusCode.FAILED_PRECONDITION
    return grpc.StatusCode.INTERNAL


def to_status_proto(error: AmperitySignalError) -> status_pb2.Status:
    """The ``google.rpc.Status`` for an error, with its details packed."""
    code = code_for(error)
    details: list[Any] = [
        error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN, metadata=error.metadata)
    ]
    if isinstance(error, InvalidFields):
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in error.violations
                ]
            )
        )
    if isinstance(error, AmperityUnavailable | CacheUnavailable | ServiceStopping):
        # A stopping service's callers may go again at once (to another replica, or to
        # this one restarted): their clients' backoff spaces the attempts.
        retry_after = 0.0 if isinstance(error, ServiceStopping) else error.retry_after
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(max(retry_after, 0.0) * 1e9))
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    packed = []
    for detail in details:
        wrapper = any_pb2.Any()
        wrapper.Pack(detail)
        packed.append(wrapper)
    return status_pb2.Status(code=code.value[0], message=error.message, details=packed)


REQUEST_ID_METADATA = "x-request-id"
"""The metadata key of a call's request id (sent by the caller or minted, always answered)."""

PIPELINE_KEY_METADATA = "x-pipeline-key"
"""The metadata key of a pipeline key, naming (or checked against) a call's integration."""


class _Status(
    collections.namedtuple("_Status", ("code", "details", "trailing_metadata")), grpc.Status
):
    """A ``grpc.Status``, built as ``grpc_status.rpc_status`` builds its own."""


ANSWERED_WITH: contextvars.ContextVar[tuple[str, bool] | None] = contextvars.ContextVar(
    "answered_with", default=None
)
"""The reason code the current call is aborted with, and whether that failure is logged.

Set by ``to_grpc_status``; reset to None by the call's observation when the call begins
(a call's context is a copy of the one it was started in, which may hold an earlier
call's value), and read by it when the call ends, to write the ``rpc failed`` line with
the reason, or none when the failure is logged already.
"""


def to_grpc_status(error: AmperitySignalError, *, logged: bool | None = None) -> grpc.Status:
    """The status to abort an RPC with (``context.abort_with_status``).

    Aborting replaces the trailing metadata the call had, so the call's request id is put
    back beside the status details: a failed call answers it as a successful one does, and
    the caller can find the failure's log line by it.

    ``logged``: whether the failure has a log line already, so the call's observation
    writes none. By default an ``AmperityError`` has one, written where it was met with
    its advice (``delivery failed``; enrichment's failures never end a call).
    """
    logged = isinstance(error, AmperityError) if logged is None else logged
    return _aborting_with(to_status_proto(error), error.reason, logged=logged)


def unknown_health_service(service: str, known: Iterable[str]) -> grpc.Status:
    """NOT_FOUND for a health check of a service this server does not report on.

    The health protocol fixes the code; the message names the services it does know.
    """
    names = ", ".join(repr(name) for name in sorted(known))
    info = error_details_pb2.ErrorInfo(
        reason="UNKNOWN_HEALTH_SERVICE",
        domain=DOMAIN,
        metadata={"service": service[:200], "known_services": names},
    )
    packed = any_pb2.Any()
    packed.Pack(info)
    message = (
        f"no health status for service {service[:200]!r}; ask for one of {names} "
        "('' is the whole server)"
    )
    return _aborting_with(
        status_pb2.Status(
            code=grpc.StatusCode.NOT_FOUND.value[0], message=message, details=[packed]
        ),
        info.reason,
        logged=False,
    )


def _aborting_with(proto: status_pb2.Status, reason: str, *, logged: bool) -> grpc.Status:
    """``proto`` with the call's request id; the call's observation told ``ANSWERED_WITH``."""
    ANSWERED_WITH.set((reason, logged))
    status = rpc_status.to_status(proto)
    trailing = tuple(status.trailing_metadata)
    request_id = request_id_var.get()
    if request_id:
        trailing += ((REQUEST_ID_METADATA, request_id),)
    return _Status(status.code, status.details, trailing)


def to_delivery_error(error: AmperitySignalError) -> pb.DeliveryError:
    """The per-event error of a DeliverStream response (with BadRequest's field violations)."""
    return pb.DeliveryError(
        code=code_for(error).value[0],
        message=error.message,
        reason=error.reason,
        metadata=error.metadata,
        retry_after_seconds=(
            error.retry_after if isinstance(error, AmperityUnavailable | CacheUnavailable) else 0.0
        ),
        field_violations=[
            pb.FieldViolation(field=v.field, description=v.description)
            for v in (error.violations if isinstance(error, InvalidFields) else ())
        ],
    )


def unexpected_failure() -> AmperitySignalError:
    """The error a caller gets for a bug: INTERNAL, naming the request id, no internals."""
    request_id = request_id_var.get()
    return AmperitySignalError(
        "amperity-signal failed unexpectedly handling this call (a bug, not a mistake in "
        f"the request); retry, and if it persists report request id {request_id}: "
        "the service's log line with that id has the error.",
        metadata={"request_id": request_id},
    )
