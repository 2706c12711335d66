"""A request that got no answer is counted under status 0 with the reason it got none.

``amperity_signal_amperity_calls_total{status="0"}`` used to be one series for a host DNS
does not know, a refused connection, a timeout and a proxy that failed: an operator
could not tell a typo in tenant_subdomain from an outage. Each kind has its reason now.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from amperity_signal.amperity.retry import NO_ANSWER_REASONS
from amperity_signal.errors import AmperityError
from amperity_signal.metrics import Metrics
from tests.unit.amperity.conftest import ClientFactory
from tests.unit.amperity.faketime import FakeTime


def _refused_certificate(request: httpx.Request) -> httpx.ConnectError:
    refused = ssl.SSLCertVerificationError(1, "certificate verify failed: self-signed")
    refused.verify_message = "self-signed certificate"
    error = httpx.ConnectError("Cannot connect to host", request=request)
    error.__cause__ = refused
    return error


def _unknown_host(request: httpx.Request) -> httpx.ConnectError:
    error = httpx.ConnectError("[Errno -2] Name or service not known", request=request)
    error.__cause__ = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return error


FAILURES: dict[str, Callable[[httpx.Request], Exception]] = {
    "TENANT_HOST_NOT_FOUND": _unknown_host,
    "CONNECT_FAILED": lambda r: httpx.ConnectError("[Errno 111] Connection refused", request=r),
    "CONNECT_TIMEOUT": lambda r: httpx.ConnectTimeout("connect timed out", request=r),
    "TIMEOUT": lambda r: httpx.ReadTimeout("read timed out", request=r),
    "TLS_REFUSED": _refused_certificate,
    "PROXY_FAILED": lambda r: httpx.ProxyError("cannot connect to the proxy", request=r),
    "CONNECTION_LOST": lambda r: httpx.RemoteProtocolError("peer closed", request=r),
}

CALLS_ROW = "| `amperity_signal_amperity_calls_total` |"
"""The README's metrics table row of the counter."""


@pytest.mark.parametrize("reason", sorted(FAILURES))
async def test_each_kind_of_no_answer_is_counted_under_its_own_reason(
    reason: str, make_client: ClientFactory, metrics: Metrics
) -> None:
    """Every attempt of the event POST counts under status 0 and this kind's reason alone."""
    attempts: list[httpx.Request] = []

    def fail(request: httpx.Request) -> httpx.Response:
        attempts.append(request)
        raise FAILURES[reason](request)

    time = FakeTime()
    with pytest.raises(AmperityError):
        await make_client(fail, clock=time.clock, sleep=time.sleep).post_event({}, deadline=None)

    counted = {
        sample.labels["reason"]: sample.value
        for family in metrics.registry.collect()
        for sample in family.samples
        if sample.name == "amperity_signal_amperity_calls_total" and sample.labels["status"] == "0"
    }
    assert counted == {reason: len(attempts)}


def test_the_reasons_are_the_closed_set_the_readme_lists() -> None:
    """Each reason is a documented code: a label value an operator can look up."""
    assert set(FAILURES) | {"CANCELLED"} == NO_ANSWER_REASONS
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    [row] = [line for line in readme.splitlines() if line.startswith(CALLS_ROW)]
    assert {reason for reason in NO_ANSWER_REASONS if f"`{reason}`" in row} == NO_ANSWER_REASONS
