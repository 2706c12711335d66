"""The gateway of a real ``serve`` caps open connections per client IP and in all.

One client holding ~20,000 sockets, each with a head it never finished, used up every
open file of the process (uvicorn took every connection, the rate limit counts requests),
and gRPC Deliver failed with it. The caps here are small; the defaults are derived from
``ulimit -n`` (``tests/gateway/test_connections.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.stack import Service, Stack
from tests.support import read_http_answer, until

pytestmark = pytest.mark.e2e

PER_CLIENT = 20
TOTAL = 30
UNFINISHED_HEAD = b"GET /healthz HTTP/1.1\r\nHost: gateway.test\r\n"
OK = b"HTTP/1.1 200 OK"


async def _service(stack: Stack) -> Service:
    sandbox = await stack.sandbox()
    caps = {"max_connections_per_client": PER_CLIENT, "max_connections": TOTAL}
    return await stack.service(sandbox, gateway=caps, enrichment=False)


@contextlib.asynccontextmanager
async def _held(
    service: Service, client_ip: str, count: int
) -> AsyncIterator[list[asyncio.StreamWriter]]:
    """``count`` connections from ``client_ip``, each in the middle of a head, held open."""
    writers: list[asyncio.StreamWriter] = []
    try:
        for _ in range(count):
            _, writer = await _connect(service, client_ip)
            writer.write(UNFINISHED_HEAD)
            writers.append(writer)
        yield writers
    finally:
        for writer in writers:
            writer.close()


async def _connect(
    service: Service, client_ip: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    url = httpx.URL(service.http_url)
    return await asyncio.open_connection(url.host, url.port, local_addr=(client_ip, 0))


async def _status_to_a_new_connection(service: Service, client_ip: str) -> bytes:
    """The status line a new connection from ``client_ip`` asking ``GET /healthz`` gets."""
    reader, writer = await _connect(service, client_ip)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: gateway.test\r\n\r\n")
        status_line, _ = await read_http_answer(reader)
        return status_line
    finally:
        writer.close()


async def _refusal(service: Service, client_ip: str) -> dict[str, str]:
    """The 503 a new connection from ``client_ip`` asking ``GET /healthz`` gets; closed after.

    The request goes out first, as a browser's does: a refusal that closed with it unread
    answered it with a reset, which the client read instead of the 503.
    """
    reader, writer = await _connect(service, client_ip)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: gateway.test\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)  # the request is at the gateway before the answer is read
        answer = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"), answer
    assert b"\r\nretry-after: 1\r\n" in head and b"\r\nconnection: close" in head
    error: dict[str, str] = json.loads(body)["error"]
    assert error["code"] == "TOO_MANY_CONNECTIONS"
    return error


async def _refused_count(service: Service, limit: str) -> float:
    async with httpx.AsyncClient(base_url=service.http_url) as client:
        page = (await client.get("/metrics")).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(page)
        if family.name == "amperity_signal_gateway_connections_refused"
        for sample in family.samples
        if sample.labels == {"limit": limit}
    )


async def test_a_client_past_its_share_of_connections_is_refused_and_others_are_served(
    stack: Stack,
) -> None:
    """20 held from one IP: its next connections get 503 JSON and close; other IPs still get in.

    One warning for the streak, however many it refuses; the count in the metrics; a held
    connection closed makes room for that client again.
    """
    service = await _service(stack)
    async with _held(service, "127.0.0.21", PER_CLIENT) as writers:
        for _ in range(5):
            error = await _refusal(service, "127.0.0.21")
            assert "This client has too many connections open" in error["message"]
        assert await _status_to_a_new_connection(service, "127.0.0.22") == OK
        assert await _refused_count(service, "client") == 5
        writers.pop().close()

        async def admitted_again() -> bool:  # a refusal's 503 until the gateway saw the close
            return await _status_to_a_new_connection(service, "127.0.0.21") == OK

        await until(admitted_again, lambda: "a freed connection did not make room")
    lines = [json.loads(line) for line in stack.logs().splitlines() if line.startswith("{")]
    [warning] = [line for line in lines if line["logger"] == "amperity_signal.gateway.connections"]
    assert warning["level"] == "warning"
    assert warning["msg"].startswith("gateway refusing connections: one client holds 20")
    assert (warning["limit"], warning["client"]) == ("client", "127.0.0.21")


async def test_past_the_gateway_s_total_every_client_is_refused(stack: Stack) -> None:
    """20 + 10 held from two IPs fill the total of 30: a third IP's connection gets the 503."""
    service = await _service(stack)
    async with (
        _held(service, "127.0.0.31", PER_CLIENT),
        _held(service, "127.0.0.32", TOTAL - PER_CLIENT),
    ):
        error = await _refusal(service, "127.0.0.33")
        assert "The gateway has as many connections open as it may" in error["message"]

    async def counted() -> bool:  # once the held connections are gone, /metrics gets in
        return await _refused_count(service, "total") == 1

    await until(counted, lambda: "the refusal was not counted under limit=total")
