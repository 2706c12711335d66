"""HTTPS through a CONNECT proxy: the TLS runs end to end, the proxy sees only the tunnel.

Real processes: the forward proxy (``forward_proxy.py``, asking for credentials) and the
service, started with ``https_proxy`` and ``SSL_CERT_FILE`` in its environment. Amperity
is a TLS server in this test's process whose certificate a throwaway CA (trustme) signed.
The service must open a tunnel with ``CONNECT host:port`` (credentials on the CONNECT,
never Amperity's token), then speak TLS through it: the TLS server gets the event with
its ``Authorization`` header, the proxy only a ``CONNECT`` and bytes it cannot read.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import trustme
from google.rpc import status_pb2

from tests.e2e.stack import Stack
from tests.e2e.test_deliver_statuses import reason
from tests.e2e.test_outbound_proxy import (
    CREDENTIALS,
    PASSWORD,
    USER,
    assert_no_credentials,
    deliver,
    proxy_env,
    with_credentials,
)
from tests.support import integration_dict, mint_keys
from tests.unit.amperity.test_amperity_aiohttp_transport import read_request

pytestmark = pytest.mark.e2e

ACCEPTED = (
    b"HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\ncontent-length: 15\r\n\r\n"
    b'{"status": 202}'
)
TLS_HANDSHAKE = 22  # the first byte of a TLS record carrying a handshake (ClientHello)


@dataclass
class TlsAmperity:
    """An HTTPS server for ``localhost`` answering 202 to every request it reads whole."""

    url: str
    ca_file: Path
    requests: list[bytes] = field(default_factory=list)


@pytest.fixture
async def tls_amperity(tmp_path: Path) -> AsyncIterator[TlsAmperity]:
    """Start the TLS server on 127.0.0.1:0 with a certificate signed by a throwaway CA."""
    ca = trustme.CA()
    ca_file = tmp_path / "corp-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while request := await read_request(reader):
                seen.append(request)
                writer.write(ACCEPTED)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    yield TlsAmperity(f"https://localhost:{port}", ca_file, seen)
    server.close()
    await server.wait_closed()


def ingest_table(url: str, **overrides: Any) -> dict[str, object]:
    """Integration ``web`` at ``url`` without enrichment: only event POSTs leave the service."""
    return integration_dict(url, mint_keys(), enrichment=False, **overrides)


async def test_https_goes_through_a_connect_tunnel_with_tls_end_to_end(
    stack: Stack, tls_amperity: TlsAmperity
) -> None:
    """https_proxy + SSL_CERT_FILE: one CONNECT, a TLS handshake inside, the token unseen."""
    sandbox = await stack.sandbox()  # unused by the integration: stack.service wants one
    proxy = await stack.forward_proxy(credentials=CREDENTIALS)
    table = ingest_table(tls_amperity.url)
    env = proxy_env(https=with_credentials(proxy.url))
    env["SSL_CERT_FILE"] = str(tls_amperity.ca_file)
    service = await stack.service(sandbox, table, env=env, debug=True)

    response = await deliver(service, anonymous_id="anon_tunnel")

    assert response.vendor_request.status_code == 202
    # Amperity (the TLS server) got the event with its token: the tunnel reached it.
    [request] = tls_amperity.requests
    request_line, *lines = request.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    assert request_line.startswith("POST /prof/events/")
    assert headers["Authorization"] == f"Bearer {table['api_key']}"
    assert response.message_id.encode() in request
    # The proxy saw one CONNECT to Amperity's host and port, authorised, and nothing it
    # could read: no Authorization header, a TLS handshake first, no plaintext token.
    [tunnel] = await proxy.requests()
    host_port = tls_amperity.url.removeprefix("https://")
    assert (tunnel["method"], tunnel["url"], tunnel["status"]) == ("CONNECT", host_port, 200)
    assert tunnel["authorized"]
    assert "authorization" not in tunnel["headers"]
    assert "proxy-authorization" in tunnel["headers"]
    assert tunnel["tunnel"]["first_byte"] == TLS_HANDSHAKE
    assert tunnel["tunnel"]["client_bytes"] > len(request)  # the request, encrypted
    assert not tunnel["plaintext_authorization"]
    logs = stack.logs()
    assert f"reaches {tls_amperity.url} through the proxy http://[REDACTED]@" in logs
    assert_no_credentials(logs)
    assert str(table["api_key"]) not in logs


async def test_a_connect_refused_for_credentials_names_the_fix_and_is_not_retried(
    stack: Stack, tls_amperity: TlsAmperity
) -> None:
    """407 to the CONNECT: FAILED_PRECONDITION PROXY_AUTH_REQUIRED at once, as for http."""
    sandbox = await stack.sandbox()
    proxy = await stack.forward_proxy(credentials=CREDENTIALS)
    env = proxy_env(https=with_credentials(proxy.url, f"{USER}:{PASSWORD}-but-wrong"))
    env["SSL_CERT_FILE"] = str(tls_amperity.ca_file)
    service = await stack.service(sandbox, ingest_table(tls_amperity.url), env=env, debug=True)

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await deliver(service, anonymous_id="anon_tunnel_refused")

    error = refused.value
    details = error.details() or ""
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, details
    assert "407 (Proxy Authentication Required)" in details
    assert "HTTPS_PROXY" in details
    assert [(r["method"], r["status"]) for r in await proxy.requests()] == [("CONNECT", 407)]
    assert tls_amperity.requests == []
    assert_no_credentials(str(error.trailing_metadata()) + details)
    assert_no_credentials(stack.logs())


def rpc_status(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    """The google.rpc.Status in an RPC error's trailing metadata."""
    status = status_pb2.Status()
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            status.ParseFromString(value)
    return status


@pytest.mark.parametrize("proxy_status", [403, 404, 405])
async def test_a_connect_the_proxy_refuses_by_policy_names_the_fix_and_is_not_retried(
    stack: Stack, tls_amperity: TlsAmperity, proxy_status: int
) -> None:
    """4xx to the CONNECT: FAILED_PRECONDITION PROXY_REFUSED at once, naming host:port."""
    sandbox = await stack.sandbox()
    proxy = await stack.forward_proxy(credentials=CREDENTIALS, connect_status=proxy_status)
    env = proxy_env(https=with_credentials(proxy.url))
    env["SSL_CERT_FILE"] = str(tls_amperity.ca_file)
    service = await stack.service(sandbox, ingest_table(tls_amperity.url), env=env, debug=True)

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await deliver(service, anonymous_id="anon_tunnel_policy")

    error = refused.value
    details = error.details() or ""
    host_port = tls_amperity.url.removeprefix("https://")
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, details
    assert reason(rpc_status(error)) == "PROXY_REFUSED"
    assert f"refused the tunnel to {host_port} ({proxy_status} " in details
    assert f"Allow CONNECT to {host_port} in the proxy's rules" in details
    assert "add localhost to NO_PROXY" in details
    assert "http://[REDACTED]@127.0.0.1:" in details
    assert "(https_proxy)" in details
    assert "Amperity rejected" not in details
    assert "API Keys" not in details  # not the advice for Amperity's own 403
    # Asked once: a policy refusal is not retried.
    assert [(r["method"], r["status"]) for r in await proxy.requests()] == [
        ("CONNECT", proxy_status)
    ]
    assert tls_amperity.requests == []
    assert_no_credentials(str(error.trailing_metadata()) + details)
    assert_no_credentials(stack.logs())


async def test_a_connect_the_proxy_cannot_carry_out_is_retried(
    stack: Stack, tls_amperity: TlsAmperity
) -> None:
    """502 to the CONNECT (upstream unreachable): retried, then UNAVAILABLE naming the proxy."""
    sandbox = await stack.sandbox()
    proxy = await stack.forward_proxy(credentials=CREDENTIALS, connect_status=502)
    env = proxy_env(https=with_credentials(proxy.url))
    env["SSL_CERT_FILE"] = str(tls_amperity.ca_file)
    table = ingest_table(tls_amperity.url, max_retries=1)
    service = await stack.service(sandbox, table, env=env, debug=True)

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await deliver(service, anonymous_id="anon_tunnel_502")

    error = refused.value
    details = error.details() or ""
    assert error.code() == grpc.StatusCode.UNAVAILABLE, details
    assert reason(rpc_status(error)) == "AMPERITY_UNAVAILABLE"
    assert "refused the tunnel" in details
    assert "502" in details
    assert [(r["method"], r["status"]) for r in await proxy.requests()] == [("CONNECT", 502)] * 2
    assert_no_credentials(str(error.trailing_metadata()) + details)
    assert_no_credentials(stack.logs())
