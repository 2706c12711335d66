"""The fastest HTTP sink we can write in Python: a raw asyncio protocol answering 202.

``python -m tests.benchmarks.sink [--delay-ms N]``. Event POSTs get ``202`` with an empty
body, optionally after ``N`` ms (to model a slower Amperity). Profile API requests
(``/prof/...``) get one canned profile per identifier, so the service can warm its cache
against the sink alone.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import signal
from typing import Any

import uvloop

ACCEPTED = b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n"
ATTRIBUTES = {
    "Persona": "Value Hunter",
    "LifetimeTier": "Gold",
    "FavoriteBrand": "Acme Outdoor",
    "NextBestOffer": "free-shipping",
    "ChurnRisk": "low",
}


def profile(identifier: bytes) -> dict[str, Any]:
    """The canned profile for an identifier (its id derived from the identifier)."""
    return {
        "collection_id": "apc-vPsQheAm",
        "profile_id": "p-" + hashlib.sha1(identifier).hexdigest()[:12],
        "attributes": ATTRIBUTES,
        "created_at": "2025-01-01T00:00:00Z",
        "updated_at": "2025-01-01T00:00:00Z",
        "links": {},
    }


def profile_answer(identifier: bytes) -> bytes:
    """A 200 with the canned profile of the identifier asked for."""
    body = json.dumps(profile(identifier)).encode()
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


class Sink(asyncio.Protocol):
    """One connection: parse pipelined HTTP/1.1 requests, answer each in order."""

    def __init__(self, delay: float) -> None:
        self._delay = delay
        self._buffer = b""
        self._transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport is not an asyncio.Transport subclass; it has the same API.
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self._buffer[:end]
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            total = end + 4 + length
            if len(self._buffer) < total:
                return
            body = self._buffer[end + 4 : total]
            self._buffer = self._buffer[total:]
            line = head.split(b"\r\n", 1)[0]
            profile_call = b" /prof/lookup/" in line or b" /prof/profiles/" in line
            answer = profile_answer(body or line) if profile_call else ACCEPTED
            self._answer(answer)

    def _answer(self, answer: bytes) -> None:
        assert self._transport is not None
        if self._delay:
            asyncio.get_running_loop().call_later(self._delay, self._write, answer)
        else:
            self._transport.write(answer)

    def _write(self, answer: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(answer)


async def serve(delay: float) -> None:
    """Serve until SIGTERM."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Sink(delay), "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    print(f"sink listening on http://127.0.0.1:{port}", flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    server.close()


def main() -> None:
    """Parse arguments and serve."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--delay-ms", type=float, default=0.0)
    args = parser.parse_args()
    uvloop.run(serve(args.delay_ms / 1000))


if __name__ == "__main__":
    main()
