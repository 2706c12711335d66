"""The bare gRPC baseline: a grpc.aio server answering every method with prebuilt bytes.

``python -m tests.benchmarks.echo --answers FILE`` where FILE is JSON ``{method: hex}``.
No (de)serialisation, no interceptors, no servicer: only what grpc.aio itself costs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import grpc
import uvloop


def handler(answers: dict[str, bytes]) -> grpc.GenericRpcHandler:
    """A generic handler answering each known method with its prebuilt response bytes."""

    class Echo(grpc.GenericRpcHandler):
        def service(self, handler_call_details: Any) -> grpc.RpcMethodHandler[bytes, bytes] | None:
            answer = answers.get(handler_call_details.method)
            if answer is None:
                return None

            async def unary(request: bytes, context: Any) -> bytes:
                return answer

            return grpc.unary_unary_rpc_method_handler(unary)

    return Echo()


async def serve(answers: dict[str, bytes]) -> None:
    """Serve until SIGTERM."""
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler(answers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"echo listening on 127.0.0.1:{port}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(0)


def main() -> None:
    """Parse arguments and serve."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--answers", required=True)
    args = parser.parse_args()
    raw = json.loads(Path(args.answers).read_text())
    uvloop.run(serve({method: bytes.fromhex(value) for method, value in raw.items()}))


if __name__ == "__main__":
    main()
