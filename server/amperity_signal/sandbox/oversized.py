"""The ``oversized_body`` fault: an answer's body replaced by one of a given size.

The answer keeps its status and headers (Retry-After, ids); its body becomes ``size``
spaces, with the Content-Length that says so, or those spaces gzip-encoded with
``Content-Encoding: gzip`` (1 MiB of spaces is about 1 KB of gzip: a decompression bomb).
Either goes out in 64 KiB pieces, so no size is ever held whole; a client that stops
reading and hangs up ends it (uvicorn drops what is sent after a disconnect).
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Iterator

from starlette.types import Message, Send

PIECE = 64 * 1024
_SPACES = b" " * PIECE
_NO_BODY_STATUSES = frozenset({204, 304})


def spaces(size: int) -> Iterator[bytes]:
    """``size`` spaces in pieces of at most ``PIECE`` bytes."""
    whole, rest = divmod(size, PIECE)
    for _ in range(whole):
        yield _SPACES
    if rest:
        yield _SPACES[:rest]


@functools.lru_cache(maxsize=4)
def gzipped_spaces(size: int) -> bytes:
    """``size`` spaces as a gzip stream (built piece by piece; cached, as faults repeat)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    packed = [packer.compress(piece) for piece in spaces(size)]
    packed.append(packer.flush())
    return b"".join(packed)


class OversizedSender:
    """An ASGI ``send`` that sends the answer's start with an oversized body instead of its own.

    Args:
        send: Where the messages go.
        size: The body's size in bytes (decoded, with ``gzipped``).
        gzipped: Send it gzip-encoded.
    """

    def __init__(self, send: Send, size: int, *, gzipped: bool) -> None:
        self._send = send
        self._size = size
        self._gzipped = gzipped
        self._replacing = True
        self._sent = False

    async def __call__(self, message: Message) -> None:
        """Passes the start on with the new body's headers; sends that body for the first body."""
        if not self._replacing:
            await self._send(message)
            return
        if message["type"] == "http.response.start":
            if message["status"] in _NO_BODY_STATUSES:  # no body may follow: left as it is
                self._replacing = False
                await self._send(message)
                return
            await self._send({**message, "headers": self._headers(message["headers"])})
            return
        if message["type"] != "http.response.body" or self._sent:
            return  # the answer's own body: replaced
        self._sent = True
        pieces = self._pieces()
        for piece in pieces:
            await self._send({"type": "http.response.body", "body": piece, "more_body": True})
        await self._send({"type": "http.response.body", "body": b"", "more_body": False})

    def _headers(self, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        kept = [
            (name, value)
            for name, value in headers
            if name.lower() not in (b"content-length", b"content-encoding")
        ]
        length = len(gzipped_spaces(self._size)) if self._gzipped else self._size
        kept.append((b"content-length", str(length).encode("ascii")))
        if self._gzipped:
            kept.append((b"content-encoding", b"gzip"))
        return kept

    def _pieces(self) -> Iterator[bytes]:
        if not self._gzipped:
            return spaces(self._size)
        packed = gzipped_spaces(self._size)
        return (packed[start : start + PIECE] for start in range(0, len(packed), PIECE))
