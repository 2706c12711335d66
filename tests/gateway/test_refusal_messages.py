"""The words of an ``UPSTREAM_REFUSED``: chosen by the service's ErrorInfo reason."""

from __future__ import annotations

import grpc
import grpc.aio
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from amperity_signal.gateway.errors import from_rpc_error

# What the service says, with configuration no browser may see.
SERVICE_MESSAGE = "stream esm-secret-stream of tenant acme: check the blueprint mapping"


def _refused(code: grpc.StatusCode, reason: str) -> grpc.aio.AioRpcError:
    info = error_details_pb2.ErrorInfo(
        reason=reason, domain="amperity-signal", metadata={"integration_id": "web"}
    )
    packed = any_pb2.Any()
    packed.Pack(info)
    status = status_pb2.Status(code=code.value[0], message=SERVICE_MESSAGE, details=[packed])
    trailing = grpc.aio.Metadata(("grpc-status-details-bin", status.SerializeToString()))
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailing, details=SERVICE_MESSAGE)


@pytest.mark.parametrize(
    ("reason", "says"),
    [
        ("AMPERITY_BAD_REQUEST", "Amperity refused the request as malformed"),
        ("CONTEXT_TOO_LONG", "was not sent to Amperity, as a value in it is too long"),
        ("URL_TOO_LONG", "was not sent to Amperity, as a value in it is too long"),
        ("PROFILE_UNAVAILABLE", "Profile lookups are not set up for this integration"),
    ],
)
def test_a_refusal_of_the_request_itself_is_not_blamed_on_the_integration(
    reason: str, says: str
) -> None:
    """A malformed event, a too-long value or no Profile API access is told as what it is.

    Every FAILED_PRECONDITION was "refused ... for this integration (its key, event stream
    ...)", which sent the page's developer to check a key that was fine.
    """
    answer = from_rpc_error(_refused(grpc.StatusCode.FAILED_PRECONDITION, reason))
    assert (answer.status, answer.code) == (502, "UPSTREAM_REFUSED")
    assert says in answer.message
    assert "its key, event stream" not in answer.message
    assert "the service's log names the fix" in answer.message
    assert "esm-" not in answer.message
    assert "acme" not in answer.message


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (grpc.StatusCode.FAILED_PRECONDITION, "STREAM_REJECTING"),
        (grpc.StatusCode.FAILED_PRECONDITION, "TENANT_HOST_NOT_FOUND"),
        (grpc.StatusCode.UNAUTHENTICATED, "INGEST_KEY_REJECTED"),
        (grpc.StatusCode.FAILED_PRECONDITION, ""),
    ],
)
def test_a_refusal_of_the_integration_says_so(code: grpc.StatusCode, reason: str) -> None:
    """A stream, host or key Amperity refuses (or no reason given) is the integration's."""
    answer = from_rpc_error(_refused(code, reason))
    assert (answer.status, answer.code) == (502, "UPSTREAM_REFUSED")
    assert "refused the service's call for this integration" in answer.message
    assert "esm-" not in answer.message
