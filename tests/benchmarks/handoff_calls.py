"""Count the calls that fail across a handoff: ``serve --handoff`` old, new, SIGTERM to old.

Callers on one long-lived channel (and keep-alive HTTP callers of ``/v1/enrich``) call
without pause through the handoff; every outcome is counted by kind, and the HTTP answers
a draining old process gave with ``Connection: close``. Counts, not
timings: the machine's load changes how many calls wait in gRPC core at the stop, not
whether any fails.

    .venv/bin/python -m tests.benchmarks.handoff_calls --callers 16 --caller client
    .venv/bin/python -m tests.benchmarks.handoff_calls --callers 16 --caller stub
    .venv/bin/python -m tests.benchmarks.handoff_calls --callers 0 --http 2 --pause 0.005
    .venv/bin/python -m tests.benchmarks.handoff_calls --callers 0 --http 8 --pause 0.002
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import signal
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import httpx

from amperity_signal_client import AmperitySignalError, AsyncAmperityClient, event_from_json
from datafly.amperity.v1 import amperity_service_pb2 as pb
from datafly.amperity.v1 import amperity_service_pb2_grpc as pb_grpc
from tests.e2e.stack import Stack, free_port
from tests.support import message_id, mint_keys

UNLIMITED = {"rate_limit_per_second": 10_000.0, "rate_limit_burst": 10_000}
Call = Callable[[int], Awaitable[None]]


def grpc_calls(target: str, caller: str) -> tuple[list[Call], Callable[[], Awaitable[None]]]:
    """Deliver and Enrich through the Python client, or through a bare generated stub."""
    if caller == "client":
        client = AsyncAmperityClient(target, pipeline_key="pk_web")

        async def deliver(n: int) -> None:
            await client.deliver(event_from_json({"type": "page", "anonymousId": f"a{n % 8}"}))

        async def enrich(n: int) -> None:
            await client.enrich(event_from_json({"type": "page", "anonymousId": f"e{n}"}))

        return [deliver, enrich], client.aclose
    channel = grpc.aio.insecure_channel(target)
    stub = pb_grpc.AmperityServiceStub(channel)

    def event(n: int) -> pb.Event:
        return pb.Event(message_id=message_id(), type="page", anonymous_id=f"a{n % 8}")

    async def bare_deliver(n: int) -> None:
        await stub.Deliver(pb.DeliverRequest(integration_id="web", event=event(n)), timeout=10)

    async def bare_enrich(n: int) -> None:
        await stub.Enrich(pb.EnrichRequest(integration_id="web", event=event(n)), timeout=10)

    return [bare_deliver, bare_enrich], channel.close


async def handoff(args: argparse.Namespace) -> dict[str, int]:
    """One handoff under load; the outcomes counted by kind."""
    counts: collections.Counter[str] = collections.Counter()
    stop = asyncio.Event()
    with tempfile.TemporaryDirectory() as workdir:
        stack = Stack(workdir=Path(workdir))
        try:
            sandbox = await stack.sandbox()
            server = {
                "grpc_address": f"127.0.0.1:{free_port()}",
                "http_address": f"127.0.0.1:{free_port()}",
            }
            flags = ("--handoff", *(("--workers", str(args.workers)) if args.workers else ()))
            old = await stack.service(
                sandbox, keys=mint_keys(), server=server, gateway=UNLIMITED, args=flags
            )
            calls, close = grpc_calls(server["grpc_address"], args.caller)
            http = httpx.AsyncClient(base_url=old.http_url, timeout=10)

            async def browser(n: int) -> None:
                params = {"provider": "amperity", "anonymous_id": f"b{n % 8}"}
                answer = await http.get(
                    "/v1/enrich", params=params, headers={"X-Pipeline-Key": "pk_web"}
                )
                answer.raise_for_status()
                if answer.headers.get("connection") == "close":
                    # The old process draining: answered, and this caller reconnects.
                    counts["answered with Connection: close"] += 1

            async def repeat(call: Call) -> None:
                n = 0
                while not stop.is_set():
                    n += 1
                    try:
                        await call(n)
                        counts["ok"] += 1
                    except grpc.aio.AioRpcError as error:
                        counts[f"{error.code().name}: {error.details()}"] += 1
                    except (AmperitySignalError, httpx.HTTPError) as error:
                        counts[f"{type(error).__name__}: {error}"] += 1
                    await asyncio.sleep(args.pause)

            loops = [calls[n % 2] for n in range(args.callers)] + [browser] * args.http
            tasks = [asyncio.create_task(repeat(loop)) for loop in loops]
            await asyncio.sleep(1)
            await stack.service(
                sandbox, keys=mint_keys(), server=server, gateway=UNLIMITED, args=flags
            )
            old.process.proc.send_signal(signal.SIGTERM)
            counts["old process exit code"] = await old.process.proc.wait()
            await asyncio.sleep(1)
            stop.set()
            await asyncio.gather(*tasks)
            await close()
            await http.aclose()
        finally:
            await stack.close()
    return dict(counts)


def main() -> None:
    """Run ``--runs`` handoffs and print each one's counts as a JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--callers", type=int, default=16, help="gRPC callers, one channel")
    parser.add_argument("--caller", choices=["client", "stub"], default="client")
    parser.add_argument("--http", type=int, default=0, help="keep-alive /v1/enrich callers")
    parser.add_argument("--pause", type=float, default=0.0, help="seconds between calls")
    parser.add_argument("--workers", type=int, default=0, help="serve --workers N")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    for _ in range(args.runs):
        print(json.dumps(asyncio.run(handoff(args))), flush=True)


if __name__ == "__main__":
    main()
