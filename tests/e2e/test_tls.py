"""TLS on the service's own listeners, over real sockets: gRPC, the gateway, mutual TLS.

The PEM files come from a throwaway CA (``tests/tls_files.py``); the server certificate
names 127.0.0.1, the address every process here listens on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import ssl
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from datafly.amperity.v1 import amperity_service_pb2 as pb
from datafly.amperity.v1 import amperity_service_pb2_grpc as pb_grpc
from tests.e2e.stack import Sandbox, Service, Stack
from tests.e2e.test_workers import two_workers_up
from tests.support import message_id
from tests.tls_files import TlsFiles, write_tls_files

pytestmark = pytest.mark.e2e
ADMIN_TOKEN = "adm-5be0c3f1d2a94e67-tls"


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    """A CA, a server certificate for 127.0.0.1, a client certificate (``write_tls_files``)."""
    directory = tmp_path / "pem"
    directory.mkdir()
    return write_tls_files(directory)


def server_table(tls: TlsFiles, *, mutual: bool = False) -> dict[str, Any]:
    """``[server]`` with TLS on both listeners; with ``mutual``, client certificates too."""
    table: dict[str, Any] = {
        "tls_cert_file": str(tls.server_cert),
        "tls_key_file": str(tls.server_key),
        "admin_token": ADMIN_TOKEN,
    }
    if mutual:
        table["tls_client_ca_file"] = str(tls.ca)
    return table


def credentials(tls: TlsFiles, *, client_cert: bool = False) -> grpc.ChannelCredentials:
    """What a client trusting the CA uses; with ``client_cert``, showing its certificate."""
    return grpc.ssl_channel_credentials(
        root_certificates=tls.ca.read_bytes(),
        private_key=tls.client_key.read_bytes() if client_cert else None,
        certificate_chain=tls.client_cert.read_bytes() if client_cert else None,
    )


@contextlib.asynccontextmanager
async def channel(
    target: str, creds: grpc.ChannelCredentials | None
) -> AsyncIterator[grpc.aio.Channel]:
    """A channel of its own (a new connection, which may reach any worker)."""
    options = [("grpc.use_local_subchannel_pool", 1)]
    opened = (
        grpc.aio.insecure_channel(target, options=options)
        if creds is None
        else grpc.aio.secure_channel(target, creds, options=options)
    )
    async with opened:
        yield opened


async def deliver(target: str, creds: grpc.ChannelCredentials | None) -> pb.DeliverResponse:
    """One Deliver on a new connection; its answer, or the AioRpcError."""
    async with channel(target, creds) as opened:
        event = pb.Event(message_id=message_id(), type="page", anonymous_id="anon_tls_01")
        stub = pb_grpc.AmperityServiceStub(opened)
        answer: pb.DeliverResponse = await stub.Deliver(
            pb.DeliverRequest(integration_id="web", event=event), timeout=10
        )
        return answer


async def health(target: str, creds: grpc.ChannelCredentials | None) -> int:
    """The overall health status, asked on a new connection."""
    async with channel(target, creds) as opened:
        stub: Any = health_pb2_grpc.HealthStub(opened)
        answer = await stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
        return int(answer.status)


async def refused(target: str, creds: grpc.ChannelCredentials | None) -> grpc.StatusCode:
    """The status a Deliver on a new connection fails with (the test fails if it succeeds)."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await deliver(target, creds)
    code: grpc.StatusCode = caught.value.code()
    return code


async def http_bytes_to(target: str) -> None:
    """Send an HTTP/1.1 request (not TLS, not gRPC) to ``target``; read until it hangs up."""
    host, _, port = target.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET / HTTP/1.1\r\nHost: scanner\r\n\r\n")
    await writer.drain()
    await asyncio.wait_for(reader.read(), 10)
    writer.close()
    await writer.wait_closed()


def not_json(log: Path) -> list[str]:
    """The lines of ``log`` that are not a JSON object (gRPC core's own, for one)."""
    lines = []
    for line in log.read_text().splitlines():
        try:
            json.loads(line)
        except ValueError:
            lines.append(line)
    return lines


def socket_names(tmpdir: Path) -> list[str]:
    """The Unix sockets the service's directories in ``tmpdir`` hold."""
    return sorted(path.name for path in tmpdir.glob("amperity-signal-grpc-*/*.sock"))


async def tls_service(stack: Stack, tls: TlsFiles, *, mutual: bool, **kwargs: Any) -> Service:
    """``serve`` with TLS on its listeners, and the sandbox it delivers to."""
    sandbox: Sandbox = await stack.sandbox()
    return await stack.service(sandbox, server=server_table(tls, mutual=mutual), **kwargs)


async def test_serve_with_tls_answers_tls_clients_and_refuses_plaintext_in_each_worker(
    stack: Stack, tls: TlsFiles, private_tmp: Path
) -> None:
    """--workers 2 on TLS: Deliver, health and https /healthz answer; plaintext is refused.

    The workers' Live Events sockets serve the gateways' streams: no worker binds a TLS
    local socket of its own beside them.
    """
    service = await tls_service(
        stack, tls, mutual=False, args=("--workers", "2"), env={"TMPDIR": str(private_tmp)}
    )
    await two_workers_up(service)
    assert socket_names(private_tmp) == ["worker-0.sock", "worker-1.sock"]
    assert service.http_url.startswith("https://127.0.0.1:")
    target = service.grpc_target
    # New connections, so that both workers' listeners are reached (the kernel spreads them).
    answers = await asyncio.gather(*(deliver(target, credentials(tls)) for _ in range(6)))
    assert all(a.ByteSize() > 0 for a in answers)
    assert await health(target, credentials(tls)) == health_pb2.HealthCheckResponse.SERVING
    assert await refused(target, None) == grpc.StatusCode.UNAVAILABLE
    verified = ssl.create_default_context(cafile=str(tls.ca))
    async with httpx.AsyncClient(base_url=service.http_url, verify=verified) as https:
        assert (await https.get("/healthz")).json() == {"status": "ok"}
        assert (await https.get("/readyz")).json() == {"status": "ready"}
    plain_url = service.http_url.replace("https://", "http://")
    async with httpx.AsyncClient(base_url=plain_url) as plain:
        with pytest.raises(httpx.HTTPError):
            await plain.get("/healthz")


async def test_mutual_tls_refuses_a_client_without_a_certificate(
    stack: Stack, tls: TlsFiles
) -> None:
    """With tls_client_ca_file a caller must show a certificate the CA signed; Live Events work.

    The embedded gateway's streams reach the service by its local socket, not the port
    that asks for a certificate the service does not hold.
    """
    service = await tls_service(stack, tls, mutual=True)
    target = service.grpc_target
    assert await refused(target, credentials(tls)) == grpc.StatusCode.UNAVAILABLE
    assert (await deliver(target, credentials(tls, client_cert=True))).ByteSize() > 0
    verified = ssl.create_default_context(cafile=str(tls.ca))
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with (
        httpx.AsyncClient(base_url=service.http_url, verify=verified, timeout=30) as https,
        https.stream("GET", "/live/stream?replay=1", headers=headers) as stream,
    ):
        assert stream.status_code == 200
        async for line in stream.aiter_lines():
            if line.startswith("id: "):
                break
        else:
            pytest.fail("the Live Events stream ended without the delivery's record")


async def test_the_standalone_gateway_reaches_a_mutual_tls_service(
    stack: Stack, tls: TlsFiles
) -> None:
    """[gateway] service_ca_file and a client certificate: /readyz and /v1/t go through."""
    gateway_table = {
        "service_ca_file": str(tls.ca),
        "service_cert_file": str(tls.client_cert),
        "service_key_file": str(tls.client_key),
    }
    service = await tls_service(stack, tls, mutual=True, gateway=gateway_table)
    gateway = await stack.gateway(service)
    url = gateway.output_value("gateway listening on ")
    assert url.startswith("https://")
    verified = ssl.create_default_context(cafile=str(tls.ca))
    async with httpx.AsyncClient(base_url=url, verify=verified, timeout=30) as https:
        assert (await https.get("/readyz")).json() == {"status": "ready"}
        answer = await https.post(
            "/v1/t",
            json={"type": "page", "anonymousId": "anon_tls_02", "messageId": message_id()},
            headers={"X-Pipeline-Key": "pk_web"},
        )
    assert answer.status_code in (200, 202), answer.text


async def test_refused_handshakes_leave_only_json_lines_on_stderr(
    stack: Stack, tls: TlsFiles
) -> None:
    """Plaintext, certificate-less and HTTP callers on mTLS: gRPC core adds no text lines.

    Core logs each refused handshake at INFO (``I1207 ... ssl_transport_security.cc:...]
    Handshake failed ...``); ``serve`` keeps core to errors, in both workers.
    """
    service = await tls_service(stack, tls, mutual=True, args=("--workers", "2"))
    await two_workers_up(service)
    target = service.grpc_target
    # Six new connections of each kind, so that both workers refuse some.
    for creds in (None, credentials(tls)):
        codes = await asyncio.gather(*(refused(target, creds) for _ in range(6)))
        assert set(codes) == {grpc.StatusCode.UNAVAILABLE}
    await asyncio.gather(*(http_bytes_to(target) for _ in range(6)))
    assert (await deliver(target, credentials(tls, client_cert=True))).ByteSize() > 0
    assert await service.process.stop() == 0
    assert service.process.log.read_text().strip(), "serve logged nothing at all"
    assert not_json(service.process.log) == []


async def test_grpc_verbosity_set_in_the_environment_keeps_grpc_core_lines(
    stack: Stack, tls: TlsFiles
) -> None:
    """An operator's GRPC_VERBOSITY=INFO (to debug) still gets core's handshake lines."""
    service = await tls_service(stack, tls, mutual=False, env={"GRPC_VERBOSITY": "INFO"})
    assert await refused(service.grpc_target, None) == grpc.StatusCode.UNAVAILABLE
    await service.process.stop()
    assert any("Handshake failed" in line for line in not_json(service.process.log))


@pytest.fixture
def private_tmp() -> Iterator[Path]:
    """A short TMPDIR of this test's own (a Unix socket's path is limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="s-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def entries(directory: Path) -> list[Path]:
    """What ``directory`` holds."""
    return sorted(directory.iterdir())


async def test_a_start_removes_the_local_socket_directory_a_killed_service_left(
    stack: Stack, tls: TlsFiles, private_tmp: Path
) -> None:
    """SIGKILL leaves the private socket's directory; the next start sweeps it, not a live one.

    The first service's directory is dead (its process gone, its socket refusing); the
    second's, live, stays while the third starts.
    """
    env = {"TMPDIR": str(private_tmp)}
    killed = await tls_service(stack, tls, mutual=True, env=env)
    left = entries(private_tmp)
    assert len(left) == 1 and left[0].stat().st_mode & 0o777 == 0o700
    await killed.process.stop(signal.SIGKILL)
    assert left[0].exists()  # nothing runs at a SIGKILL

    live = await tls_service(stack, tls, mutual=True, env=env)
    assert not left[0].exists()
    [kept] = entries(private_tmp)
    await tls_service(stack, tls, mutual=True, env=env)
    assert kept.exists() and len(entries(private_tmp)) == 2
    assert (
        await health(live.grpc_target, credentials(tls, client_cert=True))
        == health_pb2.HealthCheckResponse.SERVING
    )
