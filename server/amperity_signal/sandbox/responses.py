"""Amperity's response bodies and the per-request ids they carry."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse
from starlette.types import Scope

REQUEST_ID = "sandbox_request_id"
TRACE_ID = "sandbox_trace_id"
ARRIVED_AT = "sandbox_arrived_at"
# What a 426 asks the client to upgrade to, in RFC 2817's form (section 4.2).
UPGRADE_REQUIRED_PROTOCOLS = "TLS/1.2, HTTP/1.1"


def set_ids(scope: Scope, request_id: str, trace_id: str, arrived_at: float) -> None:
    """Attaches the request's ids and arrival time to its ASGI scope."""
    state = scope.setdefault("state", {})
    state[REQUEST_ID] = request_id
    state[TRACE_ID] = trace_id
    state[ARRIVED_AT] = arrived_at


def arrived_at(scope: Scope) -> float | None:
    """When the edge saw the request (the time the inspector shows and the limiter counts)."""
    value = scope.get("state", {}).get(ARRIVED_AT)
    return value if isinstance(value, float) else None


def ids(scope: Scope) -> dict[str, str]:
    """``{"request_id", "trace_id"}`` of a request (empty strings outside the edge)."""
    state: Mapping[str, Any] = scope.get("state", {})
    return {"request_id": state.get(REQUEST_ID, ""), "trace_id": state.get(TRACE_ID, "")}


def error(
    connection: HTTPConnection | Scope,
    status: int,
    message: str,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """An error in Amperity's shape: ``{"status", "message", "request_id", "trace_id"}``.

    A 401 also carries ``WWW-Authenticate: Bearer``, which HTTP requires of every 401
    (RFC 9110, section 15.5.2) and which names the scheme the API keys use. A 426 carries
    ``Upgrade`` (required by section 15.5.22) naming the protocols to switch to, TLS as
    Amperity's API is HTTPS, and ``Connection: Upgrade``, which section 7.8 requires of
    any sender of ``Upgrade``.
    """
    scope = connection.scope if isinstance(connection, HTTPConnection) else connection
    body = {"status": status, "message": message, **ids(scope)}
    extra = dict(headers or {})
    if status == 401:
        extra.setdefault("WWW-Authenticate", "Bearer")
    if status == 426:
        extra.setdefault("Upgrade", UPGRADE_REQUIRED_PROTOCOLS)
        extra.setdefault("Connection", "Upgrade")
    return JSONResponse(body, status_code=status, headers=extra)
