"""``ConnectionGate``: the caps on open connections, per client and in all, and their log.

The gate against a real ``serve`` process: ``tests/e2e/test_gateway_connections.py``.
"""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
from uvicorn.protocols.websockets import auto as websockets_auto

from amperity_signal.config import GatewayTable
from amperity_signal.gateway import GatewaySettings, create_gateway_app
from amperity_signal.gateway.connections import (
    PER_CLIENT,
    STREAK_QUIET_SECONDS,
    TOTAL,
    ConnectionCaps,
    ConnectionGate,
    proxy_test,
)
from amperity_signal.gateway.ratelimit import client_keys
from amperity_signal.gateway.server import GatedState
from amperity_signal.metrics import Metrics
from tests.support import integration_dict, mint_keys, read_http_answer, settings_for, until

from .conftest import gateway_settings, serving
from .fakes import RunningService

LOGGER = "amperity_signal.gateway.connections"
UPGRADE = (
    b"GET /healthz HTTP/1.1\r\nHost: gateway.test\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)


def _gate(
    total: int = 10, per_client: int = 2, proxies: tuple[str, ...] = ()
) -> tuple[ConnectionGate, list[str]]:
    refused: list[str] = []
    gate = ConnectionGate(
        ConnectionCaps(total, per_client),
        client_key=client_keys(64),
        is_proxy=proxy_test(proxies),
        refused=refused.append,
    )
    return gate, refused


def test_unset_caps_are_half_the_open_files_and_an_eighth_of_that_but_256_per_client() -> None:
    """``ulimit -n`` 1024: 512 connections, 256 per client (an office behind one NAT address).

    An eighth of the total once that is more (65536 files: 4096); never more than half the
    total, so one client cannot fill it; a configured cap is kept as it is.
    """
    assert ConnectionCaps.derive(None, None, 1024) == ConnectionCaps(512, 256)
    assert ConnectionCaps.derive(None, None, 65536) == ConnectionCaps(32768, 4096)
    assert ConnectionCaps.derive(300, None, 1024) == ConnectionCaps(300, 150)
    assert ConnectionCaps.derive(100, None, 1024) == ConnectionCaps(100, 50)
    assert ConnectionCaps.derive(None, None, 512) == ConnectionCaps(256, 128)
    assert ConnectionCaps.derive(None, 5, 1024) == ConnectionCaps(512, 5)
    assert ConnectionCaps.derive(None, None, 3) == ConnectionCaps(1, 1)


def test_a_client_past_its_share_is_refused_until_one_of_its_connections_closes() -> None:
    """Two from 203.0.113.7 are admitted, the third refused; another IP still gets in."""
    gate, refused = _gate()
    assert [gate.admit("203.0.113.7", 0.0) for _ in range(3)] == [None, None, PER_CLIENT]
    assert gate.admit("203.0.113.8", 0.0) is None
    gate.release("203.0.113.7")
    assert gate.admit("203.0.113.7", 0.0) is None
    assert (refused, gate.open) == ([PER_CLIENT], 3)


def test_the_addresses_of_one_ipv6_network_share_one_client_s_cap() -> None:
    """An IPv6 client may use any address of its /64: they count as one client."""
    gate, _ = _gate()
    assert gate.admit("2001:db8:1:2::1", 0.0) is None
    assert gate.admit("2001:db8:1:2::2", 0.0) is None
    assert gate.admit("2001:db8:1:2:ffff::3", 0.0) == PER_CLIENT
    assert gate.admit("2001:db8:1:3::1", 0.0) is None


def test_a_trusted_proxy_s_connections_count_towards_the_total_only() -> None:
    """A load balancer carries every visitor: it is held to the total, not to a client's share."""
    gate, refused = _gate(total=4, proxies=("10.0.0.0/8",))
    assert [gate.admit("10.0.0.5", 0.0) for _ in range(4)] == [None] * 4
    assert gate.admit("198.51.100.1", 0.0) == TOTAL
    assert refused == [TOTAL]


def test_no_connection_past_the_total_is_admitted_whoever_makes_it() -> None:
    """Five clients with two each fill a total of 10; the eleventh connection is refused."""
    gate, _ = _gate()
    for n in range(5):
        assert gate.admit(f"192.0.2.{n}", 0.0) is None
        assert gate.admit(f"192.0.2.{n}", 0.0) is None
    assert gate.admit("192.0.2.99", 0.0) == TOTAL
    assert gate.admit(None, 0.0) == TOTAL


def test_a_streak_of_refusals_is_one_warning_then_one_line_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """100 refusals a second apart: one warning; 10 s without one: an info line with the count."""
    caplog.set_level(logging.INFO, LOGGER)
    gate, _ = _gate(per_client=1)
    gate.admit("203.0.113.7", 0.0)
    for second in range(100):
        gate.admit("203.0.113.7", float(second))
        gate.sweep(float(second))
    gate.sweep(99 + STREAK_QUIET_SECONDS - 0.1)
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    gate.sweep(99 + STREAK_QUIET_SECONDS)
    assert [r.getMessage() for r in caplog.records][1:] == [
        "gateway accepting connections again: 100 refused over 99 s"
    ]
    gate.admit("203.0.113.7", 200.0)
    assert [r.levelname for r in caplog.records] == ["WARNING", "INFO", "WARNING"]


def test_the_gateway_table_sets_the_caps_which_are_unset_by_default() -> None:
    """``[gateway] max_connections`` and ``max_connections_per_client`` reach the gateway."""
    table = integration_dict("http://127.0.0.1:9", mint_keys())
    caps = {"max_connections": 900, "max_connections_per_client": 30}
    settings = GatewaySettings.from_settings(settings_for(table, gateway=caps))
    assert (settings.max_connections, settings.max_connections_per_client) == (900, 30)
    assert GatewayTable().max_connections is GatewaySettings().max_connections is None
    with pytest.raises(ValueError, match="max_connections_per_client must be positive"):
        GatewaySettings(max_connections_per_client=0)


class _WebSocketLibrary(asyncio.Protocol):
    """What uvicorn's "auto" WebSocket protocol is when websockets or wsproto is installed.

    It takes the connection over as the real one does (here to close it at once), and the
    gateway's protocol never hears of the connection again.
    """

    def __init__(self, **_: object) -> None:
        super().__init__()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


async def test_an_upgrade_request_leaves_no_connection_counted_once_closed(
    service: RunningService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Upgrade: websocket`` with a WebSocket library installed: answered as HTTP/1.1, released.

    uvicorn handed such a connection to that library's protocol: the gateway never heard it
    close, and each one held a place under the caps for good.
    """
    monkeypatch.setattr(websockets_auto, "AutoWebSocketsProtocol", _WebSocketLibrary)
    settings = gateway_settings(max_connections=5, max_connections_per_client=5)
    app = create_gateway_app(settings=settings, grpc_target=service.target, metrics=Metrics())
    async with serving(app, settings) as (server, url):
        address = httpx.URL(url)
        for _ in range(3):
            reader, writer = await asyncio.open_connection(address.host, address.port)
            writer.write(UPGRADE)
            status_line, _ = await read_http_answer(reader)
            assert status_line == b"HTTP/1.1 200 OK"
            writer.close()
            await writer.wait_closed()
        await until(lambda: server.gate.open == 0, lambda: "a count leaked")


async def test_a_refused_connection_lingers_after_its_503_and_is_counted_out_however_it_ends(
    service: RunningService,
) -> None:
    """The 503, then the gateway's end of the stream; closed at the client's end or after 1 s.

    Closed at once with the client's request unread, the socket answered that request with
    a reset, which most clients read instead of the 503. At most a quarter of the total cap
    linger at once (2 of 8 here): past that, a refusal is closed at once.
    """
    settings = gateway_settings(max_connections=8, max_connections_per_client=1)
    app = create_gateway_app(settings=settings, grpc_target=service.target, metrics=Metrics())
    async with serving(app, settings) as (server, url):
        address = httpx.URL(url)
        state = server.server_state
        assert isinstance(state, GatedState)

        async def refused() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            reader, writer = await asyncio.open_connection(address.host, address.port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: gateway.test\r\n\r\n")
            status_line, _ = await read_http_answer(reader)
            assert status_line == b"HTTP/1.1 503 Service Unavailable"
            assert await asyncio.wait_for(reader.read(), 10) == b""  # the gateway's end
            return reader, writer

        _, holder = await asyncio.open_connection(address.host, address.port)
        holder.write(b"GET /healthz HTTP/1.1\r\n")  # an unfinished head: the client's one place
        await until(lambda: server.gate.open == 1, lambda: "the holder was not counted")

        _, ending = await refused()
        assert state.lingering == 1
        ending.close()  # the client's end closes it now
        await until(lambda: state.lingering == 0, lambda: "an ended refusal still lingers")

        _, silent = await refused()
        assert state.lingering == 1
        await until(lambda: state.lingering == 0, lambda: "a silent refusal was never closed")

        third = [await refused() for _ in range(3)]
        assert state.lingering == 2  # the third was closed at once
        for _, writer in third:
            writer.close()
        await until(lambda: state.lingering == 0, lambda: "a count of lingering leaked")
        silent.close()
        holder.close()
        await until(lambda: server.gate.open == 0, lambda: "the holder's place leaked")
