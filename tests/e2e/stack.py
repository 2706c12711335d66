"""Real processes for end-to-end tests: the sandbox, the service (+ gateway), redis-server.

Everything binds port 0 on loopback and reports its address on stdout, so tests run in
parallel with anything else on the machine. In CI (``tests.support.in_ci``) a missing
system component (redis-server, chromium) is a failure, never a skip.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import tomli_w

from amperity_signal.processes import Process, start_process
from datafly.amperity.v1 import amperity_service_pb2_grpc as pb_grpc
from tests.support import Keys, in_ci, integration_dict, listening, mint_keys, until

CLI = [sys.executable, "-m", "amperity_signal.cli"]
FORWARD_PROXY = Path(__file__).with_name("forward_proxy.py")


# How each binary the tests start gets onto a machine; .ci/run installs the rest with apt.
_INSTALLED_BY = {"node": "Node 20 is a prerequisite of `make test`, as the README says"}


def require_binary(name: str) -> str:
    """The path of a system binary; missing fails in CI and skips elsewhere."""
    path = shutil.which(name)
    if path:
        return path
    how = _INSTALLED_BY.get(name, ".ci/run installs it with apt")
    message = f"{name} is not installed ({how})"
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    """A port free on 127.0.0.1 right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Sandbox:
    """A sandbox process and an HTTP client for its inspector."""

    process: Process
    url: str
    inspector: httpx.AsyncClient

    async def flush(self) -> None:
        """Apply pending profile updates now."""
        (await self.inspector.post("/_sandbox/flush")).raise_for_status()

    async def events(self, **params: Any) -> list[dict[str, Any]]:
        """Events the sandbox received (see docs/sandbox.md)."""
        answer = await self.inspector.get("/_sandbox/events", params={"limit": 100_000, **params})
        events: list[dict[str, Any]] = answer.json()["events"]
        return events

    async def requests(self, **params: Any) -> list[dict[str, Any]]:
        """Requests the sandbox received."""
        answer = await self.inspector.get("/_sandbox/requests", params={"limit": 20_000, **params})
        requests: list[dict[str, Any]] = answer.json()["requests"]
        return requests

    async def journaled(self, **params: Any) -> list[dict[str, Any]]:
        """``requests(**params)`` once there is one (bounded by ``until``).

        The sandbox journals a request as its answer starts to go out, but one its client
        abandoned (gone during a latency or hold) only once it sees the client gone: a
        read right after the client's call may come too early for that one.
        """
        found: list[dict[str, Any]] = []

        async def any_found() -> bool:
            found[:] = await self.requests(**params)
            return bool(found)

        await until(any_found, lambda: f"the sandbox journaled no request {params}")
        return found

    async def in_flight(self) -> list[dict[str, Any]]:
        """Requests at the sandbox not yet answered (a latency or hold keeps them)."""
        answer = await self.inspector.get("/_sandbox/in_flight")
        requests: list[dict[str, Any]] = answer.json()["requests"]
        return requests

    async def stats(self) -> dict[str, Any]:
        """Counts by endpoint kind and status."""
        stats: dict[str, Any] = (await self.inspector.get("/_sandbox/stats")).json()
        return stats

    async def fault(self, **fault: Any) -> None:
        """Inject a fault (see docs/sandbox.md)."""
        (await self.inspector.post("/_sandbox/faults", json=fault)).raise_for_status()

    async def clear_faults(self) -> None:
        """Remove every fault."""
        (await self.inspector.delete("/_sandbox/faults")).raise_for_status()

    async def release(self) -> int:
        """Let every request a ``hold`` fault keeps go on; how many there were."""
        answer = await self.inspector.post("/_sandbox/release")
        answer.raise_for_status()
        released: int = answer.json()["released"]
        return released


@dataclass
class ForwardProxy:
    """A forward proxy process (``forward_proxy.py``) and a client asking it what it saw."""

    process: Process
    url: str
    inspector: httpx.AsyncClient

    async def requests(self) -> list[dict[str, Any]]:
        """The requests it was asked to forward, oldest first (see ``forward_proxy.py``)."""
        seen: list[dict[str, Any]] = (await self.inspector.get("/_proxy/requests")).json()[
            "requests"
        ]
        return seen


@dataclass
class Service:
    """A service process (gRPC + gateway) and a channel to it."""

    process: Process
    grpc_target: str
    http_url: str
    channel: grpc.aio.Channel
    stub: pb_grpc.AmperityServiceAsyncStub
    config: Path
    keys: Keys


@dataclass
class Stack:
    """Starts processes and stops every one of them at the end of the test."""

    workdir: Path
    processes: list[Process] = field(default_factory=list)
    clients: list[httpx.AsyncClient] = field(default_factory=list)
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    async def sandbox(self, *args: str) -> Sandbox:
        """Start ``amperity-signal sandbox --port 0`` (profile delay 0 unless given)."""
        extra = list(args) if "--profile-delay" in args else [*args, "--profile-delay", "0"]
        process = await start_process(
            [*CLI, "sandbox", "--port", "0", *extra],
            ready="sandbox listening on ",
            log=self.workdir / f"sandbox-{len(self.processes)}.log",
        )
        self.processes.append(process)
        url = process.ready_line.split("listening on ", 1)[1].strip()
        inspector = httpx.AsyncClient(base_url=url, timeout=30)
        self.clients.append(inspector)
        return Sandbox(process=process, url=url, inspector=inspector)

    async def service(
        self,
        sandbox: Sandbox,
        *integrations: dict[str, Any],
        keys: Keys | None = None,
        cache: dict[str, Any] | None = None,
        server: dict[str, Any] | None = None,
        gateway: dict[str, Any] | None = None,
        args: tuple[str, ...] = (),
        debug: bool = False,
        env: dict[str, str] | None = None,
        **overrides: Any,
    ) -> Service:
        """Start ``amperity-signal serve`` with the given integrations (default: one retail).

        ``debug`` passes ``--log-level debug`` (the most verbose logging, for leak scans);
        ``env`` is added to the process's environment.
        """
        keys = keys or mint_keys()
        tables = list(integrations) or [integration_dict(sandbox.url, keys, **overrides)]
        config: dict[str, Any] = {
            "server": {
                "grpc_address": "127.0.0.1:0",
                "http_address": "127.0.0.1:0",  # the ready line says which port
                "grace_period": 5.0,
                **(server or {}),
            },
            "cache": cache or {"backend": "memory"},
            "integrations": tables,
        }
        if gateway is not None:
            config["gateway"] = gateway
        path = self.workdir / f"service-{len(self.processes)}.toml"
        path.write_text(tomli_w.dumps(config))
        process = await start_process(
            [
                *CLI,
                "serve",
                "--config",
                str(path),
                *args,
                *(("--log-level", "debug") if debug else ()),
            ],
            ready="gateway listening on " if "--no-gateway" not in args else "grpc listening on ",
            log=self.workdir / f"service-{len(self.processes)}.log",
            env=env,
        )
        self.processes.append(process)
        target = process.output_value("grpc listening on ")
        http_url = (
            process.output_value("gateway listening on ") if "--no-gateway" not in args else ""
        )
        channel = grpc.aio.insecure_channel(target)
        self.channels.append(channel)
        return Service(
            process=process,
            grpc_target=target,
            http_url=http_url,
            channel=channel,
            stub=pb_grpc.AmperityServiceStub(channel),
            config=path,
            keys=keys,
        )

    async def gateway(self, service: Service) -> Process:
        """``amperity-signal gateway`` in its own process, in front of ``service``."""
        gateway = await start_process(
            [
                *CLI,
                "gateway",
                "--config",
                str(service.config),
                "--grpc-target",
                service.grpc_target,
                "--http-address",
                "127.0.0.1:0",
            ],
            ready="gateway listening on ",
            log=self.workdir / "gateway.log",
        )
        self.processes.append(gateway)
        return gateway

    async def forward_proxy(
        self, *, credentials: str | None = None, connect_status: int | None = None
    ) -> ForwardProxy:
        """Start the test forward proxy on a free port (``credentials`` = "user:password").

        ``connect_status``: the status every authorised ``CONNECT`` is answered (no tunnel).
        """
        process = await start_process(
            [
                sys.executable,
                str(FORWARD_PROXY),
                "--port",
                "0",
                *(("--credentials", credentials) if credentials is not None else ()),
                *(("--connect-status", str(connect_status)) if connect_status else ()),
            ],
            ready="proxy listening on ",
            log=self.workdir / f"proxy-{len(self.processes)}.log",
        )
        self.processes.append(process)
        url = process.ready_line.split("listening on ", 1)[1].strip()
        # The proxy answers its own inspector only when asked directly (trust_env off).
        inspector = httpx.AsyncClient(base_url=url, timeout=30, trust_env=False)
        self.clients.append(inspector)
        return ForwardProxy(process=process, url=url, inspector=inspector)

    async def redis(self, *, password: str | None = None, port: int | None = None) -> str:
        """Start a real redis-server (on ``port``, else a free one); its URL (no password).

        Returns once it accepts connections. ``port`` brings one back where a stopped one
        was (each start has its own log).
        """
        binary = require_binary("redis-server")
        port = free_port() if port is None else port
        process = await start_process(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                *(("--requirepass", password) if password else ()),
            ],
            ready="",
            log=self.workdir / f"redis-{port}-{len(self.processes)}.log",
        )
        self.processes.append(process)
        await until(lambda: listening(port), lambda: f"redis-server did not listen on port {port}")
        return f"redis://127.0.0.1:{port}/0"

    async def close(self) -> None:
        """Stop everything this stack started, all at once.

        Each process is stopped as before (SIGTERM, killed after the grace); one after the
        other, every e2e test's teardown waited out each process's own stop in turn (a
        sandbox's takes ~0.4 s, a service's ~0.2 s).
        """
        for channel in self.channels:
            await channel.close()
        for client in self.clients:
            await client.aclose()
        await asyncio.gather(*(process.stop() for process in reversed(self.processes)))

    def logs(self) -> str:
        """Every log the processes wrote (for leak scans and failure messages)."""
        return "\n".join(
            p.log.read_text(errors="replace") for p in self.processes if p.log.exists()
        )
