"""Readable exceptions built from the service's ``google.rpc`` status details.

The tree (one class per status code the service answers with)::

    AmperitySignalError                 any failed call; code, reason, message, metadata
    ├── InvalidArgument                 a bad event: see ``field_violations``
    ├── NotFound                        unknown integration id or pipeline key
    ├── PermissionDenied                Amperity answered 403: the key lacks a scope
    ├── Unauthenticated                 Amperity answered 401: the key is wrong or expired
    ├── FailedPrecondition              misconfiguration: host, stream id, reject mode
    ├── DeadlineExceeded                no answer within the call's deadline
    ├── Unavailable                     retryable: try again after ``retry_after``
    └── ResourceExhausted               retryable: rate limited, after ``retry_after``
        └── MessageTooLarge             not retryable: a message over gRPC's size limit

``str(error)`` is ``"REASON: message"``; the message says what to fix.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

from datafly.amperity.v1 import amperity_service_pb2 as pb

DOMAIN = "amperity-signal.datafly.com"
STATUS_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True)
class FieldViolation:
    """One invalid field of a request, from ``google.rpc.BadRequest``.

    Attributes:
        field: The path of the field, e.g. ``event.anonymous_id``.
        description: What is wrong with it and how to fix it.
    """

    field: str
    description: str


class AmperitySignalError(Exception):
    """A call to the amperity-signal service failed.

    Attributes:
        code: The gRPC status code.
        message: The service's message, telling what to fix.
        reason: The ErrorInfo reason (UPPER_SNAKE), empty when the status had none.
        metadata: The ErrorInfo metadata: every variable of the message.
        field_violations: The BadRequest field violations, for invalid events.
        retry_after: The RetryInfo delay in seconds, when the service sent one.
        domain: The ErrorInfo domain, ``amperity-signal.datafly.com`` for the service.
    """

    status_code: ClassVar[grpc.StatusCode | None] = None
    retryable: ClassVar[bool] = False
    permanent: ClassVar[bool] = False
    """Retrying the same request cannot help, whatever the retry policy's codes."""

    def __init__(  # noqa: PLR0917 - positional in google.rpc order: code, message, details
        self,
        code: grpc.StatusCode,
        message: str,
        reason: str = "",
        metadata: dict[str, str] | None = None,
        field_violations: Iterable[FieldViolation] = (),
        retry_after: float | None = None,
        domain: str = "",
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.metadata = dict(metadata or {})
        self.field_violations = tuple(field_violations)
        self.retry_after = retry_after
        self.domain = domain

    def __str__(self) -> str:
        return f"{self.reason or self.code.name}: {self.message}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code.name}, reason={self.reason!r}, "
            f"message={self.message!r})"
        )


class InvalidArgument(AmperitySignalError):
    """The event is invalid; ``field_violations`` names each bad field."""

    status_code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(AmperitySignalError):
    """No integration has this id or pipeline key."""

    status_code = grpc.StatusCode.NOT_FOUND


class PermissionDenied(AmperitySignalError):
    """Amperity refused the key (403): it lacks the scope the call needs."""

    status_code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(AmperitySignalError):
    """Amperity did not accept the key (401): it is wrong, revoked or expired."""

    status_code = grpc.StatusCode.UNAUTHENTICATED


class FailedPrecondition(AmperitySignalError):
    """The integration is misconfigured: unknown host, missing stream, reject mode."""

    status_code = grpc.StatusCode.FAILED_PRECONDITION


class DeadlineExceeded(AmperitySignalError):
    """The call did not finish within its deadline."""

    status_code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unavailable(AmperitySignalError):
    """The service or Amperity is unavailable for now; retrying later can help."""

    status_code = grpc.StatusCode.UNAVAILABLE
    retryable = True


class ResourceExhausted(AmperitySignalError):
    """Rate limited; retry after ``retry_after`` seconds."""

    status_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    retryable = True


class MessageTooLarge(ResourceExhausted):
    """A message was over gRPC's size limit: the same request would be refused again.

    gRPC itself answers RESOURCE_EXHAUSTED, with no details, for a request larger than
    the service accepts (or an answer larger than this client accepts), so it is told
    apart from rate limiting by its message and never retried: each attempt would send
    the whole message again, and a refused answer means the call already ran.
    """

    retryable = False
    permanent = True


MESSAGE_TOO_LARGE = "MESSAGE_TOO_LARGE"
SERVICE_UNREACHABLE = "SERVICE_UNREACHABLE"


def service_unreachable(target: str, waited: float | None) -> Unavailable:
    """The error for a service this client could not connect to.

    Args:
        target: The address the client was given.
        waited: Seconds waited for the connection; None when the attempt failed at once.
    """
    why = "the connection failed" if waited is None else f"not connected within {waited:.3g} s"
    return Unavailable(
        grpc.StatusCode.UNAVAILABLE,
        f"Could not reach the amperity-signal service at {target} ({why}): check that it "
        "is running and that the target (host:port) is right.",
        reason=SERVICE_UNREACHABLE,
        metadata={"target": target, "waited_seconds": "0" if waited is None else f"{waited:.3g}"},
    )


_TOO_LARGE = re.compile(r"(SERVER: )?(Received|Sent) message larger than max \((\d+) vs\. (\d+)\)")


def _message_too_large(details: str) -> MessageTooLarge | None:
    """The error for gRPC's own message-size refusal, None for any other details."""
    found = _TOO_LARGE.search(details)
    if found is None:
        return None
    server, direction, size, limit = found.groups()
    if server or direction == "Sent":
        what = f"The request was {size} bytes, more than the {limit} bytes " + (
            "the service accepts: send smaller events (drop or shorten the largest "
            "properties or traits)."
            if server
            else "this client may send (channel option grpc.max_send_message_length): "
            "send smaller events or raise the option."
        )
    else:
        what = (
            f"The service's answer was {size} bytes, more than the {limit} bytes this "
            "client accepts: raise the channel option grpc.max_receive_message_length. "
            "The call ran on the service, so it is not retried."
        )
    return MessageTooLarge(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        what,
        reason=MESSAGE_TOO_LARGE,
        metadata={"size": size, "limit": limit, "refused_by": "service" if server else "client"},
    )


_BY_CODE: dict[grpc.StatusCode, type[AmperitySignalError]] = {
    cls.status_code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        PermissionDenied,
        Unauthenticated,
        FailedPrecondition,
        DeadlineExceeded,
        Unavailable,
        ResourceExhausted,
    )
    if cls.status_code is not None
}
_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def status_code_from_number(number: int) -> grpc.StatusCode:
    """The ``grpc.StatusCode`` for a ``google.rpc.Code`` number (UNKNOWN when unheard of)."""
    return _BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN)


def error_for(
    code: grpc.StatusCode,
    message: str,
    *,
    reason: str = "",
    metadata: dict[str, str] | None = None,
    field_violations: Iterable[FieldViolation] = (),
    retry_after: float | None = None,
    domain: str = "",
) -> AmperitySignalError:
    """The exception of the right subclass for ``code``."""
    cls = _BY_CODE.get(code, AmperitySignalError)
    return cls(
        code,
        message,
        reason=reason,
        metadata=metadata,
        field_violations=field_violations,
        retry_after=retry_after,
        domain=domain,
    )


def from_rpc_error(error: grpc.RpcError | grpc.aio.AioRpcError) -> AmperitySignalError:
    """The readable exception for a failed call, from its ``google.rpc.Status`` details.

    Works for both the asyncio (``AioRpcError``) and the sync (``grpc.RpcError``) flavour:
    both carry the status in the ``grpc-status-details-bin`` trailer.
    """
    code = error.code()
    message = error.details() or ""
    status = _rich_status(error.trailing_metadata() or ())
    if status is None:
        too_large = (
            _message_too_large(message) if code == grpc.StatusCode.RESOURCE_EXHAUSTED else None
        )
        if too_large is not None:
            return too_large
        return error_for(code, message or code.name.lower().replace("_", " "))
    reason, domain, metadata = "", "", dict[str, str]()
    violations: list[FieldViolation] = []
    retry_after: float | None = None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            violations.extend(
                FieldViolation(v.field, v.description) for v in bad_request.field_violations
            )
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry_info = error_details_pb2.RetryInfo()
            detail.Unpack(retry_info)
            retry_after = retry_info.retry_delay.ToNanoseconds() / 1e9
    return error_for(
        code,
        status.message or message,
        reason=reason,
        metadata=metadata,
        field_violations=violations,
        retry_after=retry_after,
        domain=domain,
    )


def from_delivery_error(error: pb.DeliveryError) -> AmperitySignalError:
    """The readable exception for one failed event of a DeliverStream."""
    return error_for(
        status_code_from_number(error.code),
        error.message,
        reason=error.reason,
        metadata=dict(error.metadata),
        field_violations=[FieldViolation(v.field, v.description) for v in error.field_violations],
        retry_after=error.retry_after_seconds or None,
        domain=DOMAIN if error.reason else "",
    )


def _rich_status(trailers: Iterable[Any]) -> status_pb2.Status | None:
    """The ``google.rpc.Status`` in the trailers, None when absent or garbled.

    This is what ``grpc_status.rpc_status.from_call`` reads, without its consistency check
    (a garbled trailer must still give a readable error) and with types.
    """
    for key, value in trailers:
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            try:
                return status_pb2.Status.FromString(value)
            except DecodeError:
                return None
    return None
