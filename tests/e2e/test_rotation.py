"""Rotating a key by handoff: a second ``serve --handoff`` takes the ports, the old one stops.

The procedure of README "Rotating keys and certificates", with real processes and callers
that keep calling through it: none of their calls fails, and once the old process is gone
Amperity sees only the new key.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import trustme
from grpc_health.v1.health_pb2 import HealthCheckRequest
from grpc_health.v1.health_pb2_grpc import HealthStub

from amperity_signal.sandbox.tokens import fingerprint
from amperity_signal_client import AmperitySignalError, AsyncAmperityClient, event_from_json
from tests.e2e.stack import Sandbox, Stack, free_port
from tests.support import mint_keys, read_http_answer, until, until_held, until_refused

pytestmark = pytest.mark.e2e
# Many calls a second from one address: the gateway's per-client limit would answer 429.
UNLIMITED = {"rate_limit_per_second": 10_000.0, "rate_limit_burst": 10_000}


@dataclass
class Callers:
    """Callers that call until stopped; what failed, and what each Deliver sent."""

    stop: asyncio.Event = field(default_factory=asyncio.Event)
    failures: list[str] = field(default_factory=list)
    calls: int = 0
    delivered: list[tuple[str, bool]] = field(default_factory=list)  # (message_id, later)
    later: bool = False  # set once the old process has exited
    answered_closing: int = 0  # HTTP answers saying Connection: close

    def describe(self, what: str) -> Callable[[], str]:
        """For ``until``: ``what`` did not happen, and the first failures, if any."""
        return lambda: f"{what}; failures: {self.failures[:3]}"

    async def repeat(self, call: Callable[[int], Awaitable[None]]) -> None:
        """Call ``call`` (with a running count) until stopped, keeping every failure."""
        n = 0
        while not self.stop.is_set():
            n += 1
            try:
                await call(n)
            except (AmperitySignalError, httpx.HTTPError) as error:
                self.failures.append(f"{type(error).__name__}: {error}")
            else:
                self.calls += 1


async def requests_since(sandbox: Sandbox, total: int) -> list[dict[str, Any]]:
    """The requests the sandbox recorded after its first ``total`` ones."""
    newer = (await sandbox.stats())["total"] - total
    return await sandbox.requests(limit=newer) if newer else []


async def test_a_key_rotated_by_handoff_fails_no_call_and_only_the_new_key_reaches_amperity(
    stack: Stack,
) -> None:
    """Deliver, Enrich and /v1/enrich keep answering through the handoff; then new key only."""
    sandbox = await stack.sandbox()
    server = {
        "grpc_address": f"127.0.0.1:{free_port()}",
        "http_address": f"127.0.0.1:{free_port()}",
    }
    old_keys, new_keys = mint_keys(), mint_keys()
    old = await stack.service(
        sandbox, keys=old_keys, server=server, gateway=UNLIMITED, args=("--handoff",)
    )
    callers = Callers()
    client = AsyncAmperityClient(server["grpc_address"], pipeline_key="pk_web")
    # Keep-alive: the same connection to the old process until an answer closes it.
    http = httpx.AsyncClient(base_url=old.http_url, timeout=10)

    async def deliver(n: int) -> None:
        event = event_from_json({"type": "page", "anonymousId": f"anon_d{n % 8}"})
        later = callers.later
        answer = await client.deliver(event)
        callers.delivered.append((answer.message_id, later))

    async def enrich(n: int) -> None:
        await client.enrich(event_from_json({"type": "page", "anonymousId": f"anon_e{n}"}))

    async def browser_enrich(n: int) -> None:
        params = {"provider": "amperity", "anonymous_id": f"anon_b{n % 8}"}
        headers = {"X-Pipeline-Key": "pk_web"}
        # No retry: the draining old process answers every request on its connections.
        answer = await http.get("/v1/enrich", params=params, headers=headers)
        if answer.headers.get("connection") == "close":
            callers.answered_closing += 1
        if answer.status_code != 200:
            callers.failures.append(f"/v1/enrich {answer.status_code}: {answer.text}")

    # Enough calls in flight on one channel that some wait in gRPC core, unstarted, when
    # the old process stops: it answers those CANCELLED (README: client retries).
    loops = [*[deliver, enrich] * 6, browser_enrich]
    tasks = [asyncio.create_task(callers.repeat(loop)) for loop in loops]
    try:
        # Traffic through the old process first, and through the new one once the old has
        # gone: each waited for (not a fixed time: a loaded machine may be slower).
        await until(lambda: bool(callers.delivered), callers.describe("no Deliver at first"))
        await stack.service(
            sandbox, keys=new_keys, server=server, gateway=UNLIMITED, args=("--handoff",)
        )
        old.process.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(old.process.proc.wait(), 15) == 0
        seen = (await sandbox.stats())["total"]
        callers.later = True
        await until(
            lambda: any(after for _, after in callers.delivered),
            callers.describe("no Deliver after the old process exited"),
        )
    finally:
        callers.stop.set()
        await asyncio.gather(*tasks)
        await client.aclose()
        await http.aclose()

    assert callers.failures == [], callers.failures
    assert callers.answered_closing, "the old process never answered with Connection: close"
    later = [message_id for message_id, after in callers.delivered if after]
    assert later, "no Deliver after the old process exited"
    old_fingerprints = {f"Bearer <fp:{fingerprint(key)}>" for key in vars(old_keys).values()}
    new_fingerprints = {f"Bearer <fp:{fingerprint(key)}>" for key in vars(new_keys).values()}
    sent = {str(r["message_id"]): r["headers"] for r in await sandbox.requests()}
    assert {sent[m]["authorization"] for m in later} == {
        f"Bearer <fp:{fingerprint(new_keys.ingest)}>"
    }
    newer = await requests_since(sandbox, seen)
    assert newer and {r["headers"]["authorization"] for r in newer} <= new_fingerprints
    before = {sent[m]["authorization"] for m, after in callers.delivered if not after}
    assert before & old_fingerprints, "the old process never delivered: nothing was rotated"


def tcp_sockets(pid: int) -> list[tuple[int, int, str]]:
    """(local port, remote port, state) of each TCP socket process ``pid`` holds (/proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target.removeprefix("socket:[").removesuffix("]"))
    held = []
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        lines = table.read_text().splitlines()[1:] if table.exists() else []  # no IPv6
        for line in lines:
            local, remote, state, inode = (line.split()[i] for i in (1, 2, 3, 9))
            if inode in inodes:
                held.append((int(local[-4:], 16), int(remote[-4:], 16), state))
    return held


LISTEN = "0A"  # /proc/net/tcp's state of a listening socket


async def connection_to(
    pid: int, port: int, request: bytes
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A keep-alive connection to ``port`` whose request process ``pid`` answered.

    Two processes share the port: the kernel gives each new connection to one of them.
    """
    for _ in range(50):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        status, headers = await read_http_answer(reader)
        assert (status, headers.get("connection")) == (b"HTTP/1.1 200 OK", None)
        client_port = writer.get_extra_info("sockname")[1]
        if (port, client_port, "01") in tcp_sockets(pid):  # 01: established
            return reader, writer
        writer.close()
    raise AssertionError(f"50 connections to port {port}, none to process {pid}")


async def test_an_idle_keep_alive_connection_to_the_old_process_is_answered_after_sigterm(
    stack: Stack,
) -> None:
    """Its request, sent once the old process stopped listening: answered, Connection: close.

    The old process used to close its idle keep-alive connections as its stop began, and a
    request its client sent then got no answer. Now it drains them: the client is told to
    reconnect, which reaches the new process.
    """
    sandbox = await stack.sandbox()
    port = free_port()
    server = {"grpc_address": f"127.0.0.1:{free_port()}", "http_address": f"127.0.0.1:{port}"}
    old = await stack.service(sandbox, server=server, gateway=UNLIMITED, args=("--handoff",))
    request = (
        b"GET /v1/enrich?provider=amperity&anonymous_id=anon_idle HTTP/1.1\r\n"
        b"Host: gateway\r\nX-Pipeline-Key: pk_web\r\n\r\n"
    )
    await stack.service(sandbox, server=server, gateway=UNLIMITED, args=("--handoff",))
    # Opened after the new process started: the old one's keep-alive timeout (5 s) must not
    # close it before the SIGTERM.
    reader, writer = await connection_to(old.process.pid, port, request)
    try:
        old.process.proc.send_signal(signal.SIGTERM)
        while (port, 0, LISTEN) in tcp_sockets(old.process.pid):  # the stop closes it first
            assert old.process.proc.returncode is None, "the old process exited at once"
            await asyncio.sleep(0.01)
        writer.write(request)
        status, headers = await read_http_answer(reader)
        assert (status, headers.get("connection")) == (b"HTTP/1.1 200 OK", "close")
        assert await asyncio.wait_for(reader.read(), 10) == b"", "closed after its answer"
    finally:
        writer.close()
    assert await asyncio.wait_for(old.process.proc.wait(), 15) == 0


async def test_sighup_is_logged_as_no_reload_and_the_service_keeps_serving(stack: Stack) -> None:
    """SIGHUP no longer stops the service: a warning names the rotation procedure instead."""
    sandbox = await stack.sandbox()
    service = await stack.service(sandbox)
    service.process.proc.send_signal(signal.SIGHUP)
    async with httpx.AsyncClient(base_url=service.http_url, timeout=10) as http:
        await until(
            lambda: "SIGHUP ignored" in stack.logs() or service.process.proc.returncode is not None
        )
        assert service.process.proc.returncode is None, "SIGHUP stopped the service"
        assert "start a second serve --handoff" in stack.logs()
        assert (await http.get("/readyz")).status_code == 200
    service.process.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(service.process.proc.wait(), 15) == 0


def served_certificate(address: str, ca: Path) -> bytes:
    """The certificate (DER) a new TLS connection to ``address`` is shown."""
    host, port = address.rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(ca))
    with (
        socket.create_connection((host, int(port)), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host) as wrapped,
    ):
        certificate = wrapped.getpeercert(binary_form=True)
    assert certificate is not None
    return certificate


async def test_a_certificate_rotated_by_handoff_is_shown_to_new_connections(
    stack: Stack, tmp_path: Path
) -> None:
    """A TLS caller keeps calling through the handoff; new connections get the new certificate."""
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    tables = []
    for name in ("old", "new"):
        issued = ca.issue_cert("127.0.0.1")
        issued.cert_chain_pems[0].write_to_path(str(tmp_path / f"{name}.pem"))
        issued.private_key_pem.write_to_path(str(tmp_path / f"{name}.key"))
        (tmp_path / f"{name}.key").chmod(0o600)
        tables.append(
            {
                "tls_cert_file": str(tmp_path / f"{name}.pem"),
                "tls_key_file": str(tmp_path / f"{name}.key"),
            }
        )
    sandbox = await stack.sandbox()
    addresses = {
        "grpc_address": f"127.0.0.1:{free_port()}",
        "http_address": f"127.0.0.1:{free_port()}",
    }
    old = await stack.service(sandbox, server={**addresses, **tables[0]}, args=("--handoff",))
    old_certificate = served_certificate(addresses["http_address"], tmp_path / "ca.pem")
    callers = Callers()
    trust = grpc.ssl_channel_credentials(root_certificates=ca.cert_pem.bytes())
    client = AsyncAmperityClient(
        addresses["grpc_address"], pipeline_key="pk_web", credentials=trust
    )

    async def deliver(n: int) -> None:
        await client.deliver(event_from_json({"type": "page", "anonymousId": f"anon_t{n % 8}"}))

    tasks = [asyncio.create_task(callers.repeat(deliver)) for _ in range(4)]
    try:
        await until(lambda: callers.calls > 0, callers.describe("no call at first"))
        await stack.service(sandbox, server={**addresses, **tables[1]}, args=("--handoff",))
        old.process.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(old.process.proc.wait(), 15) == 0
        calls = callers.calls
        await until(
            lambda: callers.calls > calls,
            callers.describe("no call after the old process exited"),
        )
    finally:
        callers.stop.set()
        await asyncio.gather(*tasks)
        await client.aclose()

    assert callers.failures == [], callers.failures
    assert callers.calls > calls, "no call after the old process exited"
    for address in addresses.values():
        certificate = served_certificate(address, tmp_path / "ca.pem")
        assert certificate != old_certificate
        assert certificate == ssl.PEM_cert_to_DER_cert((tmp_path / "new.pem").read_text())


async def test_a_stop_refuses_new_grpc_connections_at_once_and_answers_the_gateways_held_request(
    stack: Stack,
) -> None:
    """SIGTERM closes the gRPC listener first; a gateway request in flight still gets its 200.

    The stop used to keep the gRPC port listening until the gateway had drained and its
    requests in flight were answered (up to the whole grace period): for that long new
    callers kept connecting to the process going away instead of to its replacement
    sharing the port. The gateway's requests reach the servicer in process, not through
    the port, so closing it first costs them nothing.

    The sandbox holds the event POST (a ``hold`` fault) until the port is seen refusing,
    then releases it: the old stop, which closed the port only once the held request was
    answered, never closes it while the request is held, and ``until_refused`` times out.
    """
    sandbox = await stack.sandbox()
    service = await stack.service(
        sandbox,
        server={"grace_period": 60.0},
        gateway={"deliver_timeout": 60.0},
        request_timeout=60.0,
        max_retries=0,
    )
    await sandbox.fault(kind="events", hold=True, count=1)
    body = {"event": "Product Viewed", "anonymousId": "anon_held", "messageId": "msg-held"}
    async with httpx.AsyncClient(base_url=service.http_url, timeout=90) as http:
        held = asyncio.create_task(
            http.post("/v1/t", headers={"X-Pipeline-Key": "pk_web"}, json=body)
        )
        await until_held(sandbox.inspector, held)
        service.process.proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(until_refused(service.grpc_target), 60)
        assert not held.done(), "the gRPC port listened until the gateway's request was answered"
        async with grpc.aio.insecure_channel(service.grpc_target) as channel:
            health: Any = HealthStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await health.Check(HealthCheckRequest(), timeout=30)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert not held.done(), (await held).text
        assert await sandbox.release() == 1
        answer = await asyncio.wait_for(held, 90)
    assert (answer.status_code, answer.json()) == (200, {"success": True, "messageId": "msg-held"})
    [event] = [r for r in await sandbox.requests() if r["kind"] == "events"]
    assert (event["message_id"], event["status"]) == ("msg-held", 202)
    assert await asyncio.wait_for(service.process.proc.wait(), 60) == 0
