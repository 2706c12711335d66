"""HTTP errors of the gateway, and the one place that maps gRPC status codes to them.

Every error leaves the gateway as JSON, never as a stack trace::

    {"error": {"code": "UPPER_SNAKE", "message": "what to change", "field": "optional"}}

The tree::

    GatewayError           an HTTP status, a code and a message (optionally a field)
    └── InvalidFieldError       400 INVALID_EVENT naming the offending JSON field
"""

from __future__ import annotations

import importlib
import json
import json.encoder
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from starlette.responses import JSONResponse
from starlette.types import Send

from amperity_signal.gateway.backend import REQUEST_ID_METADATA

# google.rpc ships without type information; its messages are read dynamically.
_STATUS_DETAILS_KEY = "grpc-status-details-bin"
_HTTP_CODES: dict[int, str] = {
    400: "BAD_REQUEST",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "BODY_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "RATE_LIMITED",
    431: "HEADERS_TOO_LARGE",
}
REFUSAL_STATUSES: dict[str, int] = {"PAYLOAD_TOO_LARGE": 413}
"""The HTTP status of an INVALID_ARGUMENT by its reason, where 400 would mislead.

PAYLOAD_TOO_LARGE is Amperity's (or a proxy's) 413 for an event whose body the gateway
took: the event is too large, not wrong, and the page is told so as Amperity told us.
"""


class GatewayError(Exception):
    """An error answered to the HTTP caller.

    Args:
        status: The HTTP status code.
        code: An UPPER_SNAKE code clients can branch on.
        message: What went wrong and what to change.
        field: The offending request field, when there is one.
        headers: Extra response headers, e.g. ``Retry-After``.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        """The JSON error object (the value of the top-level ``error`` key)."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        return body


class InvalidFieldError(GatewayError):
    """A request field with the wrong type or value (400 ``INVALID_EVENT``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(400, "INVALID_EVENT", f"{field}: {message}", field=field)


# JSONResponse's json.dumps call builds a JSONEncoder per response (its arguments are not
# the defaults); one encoder with the same arguments writes the same bytes for less.
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":"))
# And ``JSONEncoder.encode`` builds its C encoder (and a closure) on every call: the same C
# encoder, built once with the same settings, writes the same bytes in half the time. It
# keeps no record of the containers it is inside (``check_circular``): a body is built from
# JSON and protobuf values, which cannot contain themselves, and a failure half-way (NaN)
# then leaves no stale record behind for the next body.
_make_c_encoder = getattr(json.encoder, "c_make_encoder", None)
_C_ENCODE = (
    None
    if _make_c_encoder is None
    else _make_c_encoder(
        None, _ENCODER.default, json.encoder.encode_basestring, None, ":", ",", False, False, False
    )
)


def json_body(content: Any) -> bytes:
    """``content`` as the bytes ``JSONResponse.render`` gives."""
    if _C_ENCODE is None:  # an interpreter without the C accelerator
        return _ENCODER.encode(content).encode("utf-8")
    return "".join(_C_ENCODE(content, 0)).encode("utf-8")


class GatewayJSONResponse(JSONResponse):
    """Starlette's ``JSONResponse``, rendered by one shared encoder of the same settings."""

    def render(self, content: Any) -> bytes:
        """The body: exactly the bytes ``JSONResponse.render`` gives."""
        return json_body(content)


def json_response(
    content: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """A JSON response that no cache stores (profiles and receipts are per visitor)."""
    all_headers = {"Cache-Control": "no-store", **(headers or {})}
    return GatewayJSONResponse(content, status_code=status, headers=all_headers)


async def send_json(send: Send, content: Any) -> None:
    """Send what ``json_response(content)`` sends, without building the response object.

    The same status, raw headers (in the same order) and body bytes: a test compares them.
    """
    await send_json_body(send, json_body(content))


async def send_json_body(send: Send, body: bytes) -> None:
    """``send_json`` for a body already rendered (``json_body``'s bytes)."""
    headers = [
        (b"cache-control", b"no-store"),
        (b"content-length", str(len(body)).encode("latin-1")),
        (b"content-type", b"application/json"),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def error_response(error: GatewayError) -> JSONResponse:
    """The JSON response for a gateway error."""
    return json_response({"error": error.body()}, error.status, error.headers)


def http_status_error(
    status: int, detail: str | None, headers: Mapping[str, str] | None
) -> GatewayError:
    """A GatewayError for a Starlette ``HTTPException`` (unknown route, wrong method)."""
    code = _HTTP_CODES.get(status, "BAD_REQUEST" if status < 500 else "INTERNAL")
    if status == 404:
        message = "There is no such route; see GET /openapi.json for the gateway's routes."
    elif status == 405:
        allowed = (headers or {}).get("Allow", "")
        message = f"This route does not take that method; use one of: {allowed}."
    else:
        message = detail or "The request could not be handled."
    return GatewayError(status, code, message, headers=headers)


def _rich_details(
    error: grpc.aio.AioRpcError,
) -> tuple[str | None, list[tuple[str, str]], float | None]:
    """The ErrorInfo reason, BadRequest (field, description)s and RetryInfo delay of an RPC."""
    status = _status_details(error)
    if status is None:
        return None, [], None
    details_pb2: Any = importlib.import_module("google.rpc.error_details_pb2")
    reason: str | None = None
    fields: list[tuple[str, str]] = []
    delay: float | None = None
    for detail in status.details:
        if detail.Is(details_pb2.ErrorInfo.DESCRIPTOR):
            info = details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = str(info.reason) or None
        elif detail.Is(details_pb2.BadRequest.DESCRIPTOR):
            bad = details_pb2.BadRequest()
            detail.Unpack(bad)
            fields.extend((str(v.field), str(v.description)) for v in bad.field_violations)
        elif detail.Is(details_pb2.RetryInfo.DESCRIPTOR):
            retry = details_pb2.RetryInfo()
            detail.Unpack(retry)
            delay = float(retry.retry_delay.ToNanoseconds()) / 1e9
    return reason, fields, delay


def _retry_after(delay: float | None, default: int) -> dict[str, str]:
    seconds = default if delay is None else max(1, math.ceil(delay))
    return {"Retry-After": str(seconds)}


def _renamed(
    message: str, violations: list[tuple[str, str]], body_field: Callable[[str], str]
) -> tuple[str, list[str]]:
    """The service's message and fields, each field named by ``body_field`` instead.

    The service's message ends with its violations, each ``field: description``; a
    message of another shape keeps its words (the ``field`` is renamed all the same).
    """
    fields = [body_field(field) for field, _ in violations]
    given = "; ".join(f"{field}: {description}" for field, description in violations)
    if given and message.endswith(given):
        renamed = "; ".join(f"{f}: {d}" for f, (_, d) in zip(fields, violations, strict=True))
        message = message[: len(message) - len(given)] + renamed
    return message, fields


def _status_details(error: grpc.aio.AioRpcError) -> Any:
    """The RPC's ``google.rpc.Status`` from its trailing metadata, or None."""
    metadata = error.trailing_metadata() or ()
    raw = next((v for k, v in metadata if k == _STATUS_DETAILS_KEY), None)
    if not isinstance(raw, bytes):
        return None
    status_pb2: Any = importlib.import_module("google.rpc.status_pb2")
    try:
        return status_pb2.Status.FromString(raw)
    except Exception:  # a garbled trailer must not turn into a 500
        return None


@dataclass(frozen=True)
class Refusal:
    """An RPC the service refused for an integration's sake: Amperity refused its call.

    Attributes:
        reason: The ErrorInfo reason, e.g. ``INGEST_KEY_REJECTED``.
        integration_id: The integration the ErrorInfo names.
        advice: The service's message: what Amperity answered and what to change.
        request_id: The service's request id of the call ("" when it sent none), which
            the service's own lines about it carry.
    """

    reason: str
    integration_id: str
    advice: str
    request_id: str


def service_request_id(error: grpc.aio.AioRpcError) -> str:
    """The service's request id of a failed call, from its trailers; "" when there is none."""
    ids = [v for k, v in error.trailing_metadata() or () if k == REQUEST_ID_METADATA]
    return ids[-1] if ids and isinstance(ids[-1], str) else ""


def refusal(error: grpc.aio.AioRpcError) -> Refusal | None:
    """What the service said of an RPC it refused for an integration's sake, if it did.

    An Amperity failure's ErrorInfo names the integration (every variable of its message
    is in its metadata, AIP-193), and the service logs each failed delivery with its fix
    under the call's request id. None for anything else: no answer, a deadline, an error
    of the service's own (its cache, its shutdown), whose only per-request line is ours.
    """
    status = _status_details(error)
    if status is None:
        return None
    details_pb2: Any = importlib.import_module("google.rpc.error_details_pb2")
    for detail in status.details:
        if detail.Is(details_pb2.ErrorInfo.DESCRIPTOR):
            info = details_pb2.ErrorInfo()
            detail.Unpack(info)
            integration = str(info.metadata.get("integration_id", ""))
            if not (info.reason and integration):
                return None
            advice = error.details() or ""
            return Refusal(str(info.reason), integration, advice, service_request_id(error))
    return None


# Amperity refused the service's call for a reason of the integration's own (a key it
# refuses, an event stream that is missing or rejecting, no profile collection): the same
# request fails the same way until an operator changes the configuration, so its code is
# one no client retries (datafly.js resent UPSTREAM_ERROR three times).
_REFUSED_FOR_THE_INTEGRATION = frozenset(
    {
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
    }
)
_REFUSED_MESSAGE = (
    "Amperity refused the service's call for this integration (its key, event stream or "
    "profile collection); sending it again will not help until the integration is fixed: "
    "the service's log names the fix."
)
# FAILED_PRECONDITION also carries refusals of the request itself, told by the ErrorInfo
# reason: each gets its own words, generic still (no configuration detail to a browser).
# Any other reason (a stream missing or rejecting, a proxy, a host) is the integration's.
_NOT_THE_SAME_AGAIN = "sending it again will not help: the service's log names the fix."
_REFUSED_MESSAGES = {
    "AMPERITY_BAD_REQUEST": f"Amperity refused the request as malformed; {_NOT_THE_SAME_AGAIN}",
    "CONTEXT_TOO_LONG": (
        f"The request was not sent to Amperity, as a value in it is too long for Amperity's API; "
        f"{_NOT_THE_SAME_AGAIN}"
    ),
    "PROFILE_UNAVAILABLE": (
        "Profile lookups are not set up for this integration (no Profile API access); "
        f"{_NOT_THE_SAME_AGAIN}"
    ),
}
_REFUSED_MESSAGES["URL_TOO_LONG"] = _REFUSED_MESSAGES["CONTEXT_TOO_LONG"]


# One return per status: the function is the mapping table, read top to bottom.
def from_rpc_error(  # noqa: PLR0911
    error: grpc.aio.AioRpcError, body_field: Callable[[str], str] | None = None
) -> GatewayError:
    """Map a failed RPC to what the HTTP caller may see.

    Only caller mistakes (INVALID_ARGUMENT, NOT_FOUND) carry the service's message; the
    rest get a generic one, so no configuration detail of the service reaches a browser.
    An INVALID_ARGUMENT is 400, or the status ``REFUSAL_STATUSES`` names for its reason.

    Args:
        error: The failed RPC.
        body_field: The request body's name for a field the service names (its proto
            path), for a route whose body the request was made from; it returns a path
            it cannot name unchanged.
    """
    code = error.code()
    reason, violations, delay = _rich_details(error)
    details = error.details() or ""
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        fields = [field for field, _ in violations]
        if body_field is not None:
            details, fields = _renamed(details, violations, body_field)
        field = fields[0] if fields else None
        # No reason given: the request is at fault, not necessarily an event (an enrich
        # or consent request carries none), so the neutral reason the service uses.
        message = details or "The service refused the request as invalid; check its fields."
        status = REFUSAL_STATUSES.get(reason or "", 400)
        return GatewayError(status, reason or "INVALID_REQUEST", message, field=field)
    if code == grpc.StatusCode.NOT_FOUND:
        message = details or "No integration uses this pipeline key."
        return GatewayError(404, "UNKNOWN_PIPELINE_KEY", message, field="pipeline_key")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return GatewayError(
            429,
            "RATE_LIMITED",
            "Too many requests are reaching Amperity; retry after the Retry-After delay.",
            headers=_retry_after(delay, 1),
        )
    if code == grpc.StatusCode.UNAVAILABLE:
        # A consent state the service could not keep: the page must not believe it was.
        message = (
            "The consent state was not recorded; send it again after the Retry-After delay."
            if reason == "CACHE_UNAVAILABLE"
            else "The service is unavailable; retry after the Retry-After delay."
        )
        return GatewayError(503, "SERVICE_UNAVAILABLE", message, headers=_retry_after(delay, 1))
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return GatewayError(504, "DEADLINE_EXCEEDED", "The service did not answer in time.")
    if code in _REFUSED_FOR_THE_INTEGRATION:
        return GatewayError(
            502, "UPSTREAM_REFUSED", _REFUSED_MESSAGES.get(reason or "", _REFUSED_MESSAGE)
        )
    return GatewayError(502, "UPSTREAM_ERROR", "The service could not handle the request.")
