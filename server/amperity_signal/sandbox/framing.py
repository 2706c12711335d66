"""Reading a ``/prof`` request's body as Amperity's front door does: within 64 KB.

Amperity takes at most 65536 bytes per body and an event only with a ``Content-Length``.
These are refused before the API sees the request, and before the body is kept:

- ``POST /prof/events/{event_stream_id}`` without ``Content-Length`` (a chunked body) is
  411, its body left unread;
- a ``Content-Length`` that is no number is 400, its body left unread;
- a declared ``Content-Length`` over 65536 is 413 before a byte of the body is read;
- a body without ``Content-Length`` is read only until it passes 65536 bytes, then 413.

A body the sandbox stopped reading is never buffered: the server discards the rest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.types import Receive

from amperity_signal.sandbox.errors import RefusalError

MAX_BODY_BYTES = 65_536
_EVENT_PATH = re.compile(r"/prof/events/[^/]+")
_DIGITS = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class RequestBody:
    """What was read of a request's body.

    Attributes:
        data: The whole body; empty when ``refusal`` is set.
        disconnected: The client went away while the body was read.
        refusal: The 400, 411 or 413 to answer instead of passing the request on.
    """

    data: bytes
    disconnected: bool = False
    refusal: RefusalError | None = None


def _too_large(path: str) -> RefusalError:
    fix = "send one small event" if _EVENT_PATH.fullmatch(path) else "send a smaller body"
    return RefusalError(413, f"the body is over {MAX_BODY_BYTES} bytes, Amperity's limit: {fix}")


def framing_refusal(method: str, path: str, headers: Headers) -> RefusalError | None:
    """The refusal a request's headers alone decide (411, 400 or a declared 413), if any."""
    declared = headers.get("content-length")
    if declared is None:
        if method == "POST" and _EVENT_PATH.fullmatch(path):
            return RefusalError(411, "send a Content-Length header (chunked bodies are refused)")
        return None
    digits = declared.strip()
    if not _DIGITS.fullmatch(digits):
        return RefusalError(400, "Content-Length is not a number")
    # Compared as text first: int() refuses strings of over 4300 digits.
    if len(digits.lstrip("0")) > len(str(MAX_BODY_BYTES)) or int(digits) > MAX_BODY_BYTES:
        return _too_large(path)
    return None


async def read_body(receive: Receive, method: str, path: str, headers: Headers) -> RequestBody:
    """Reads a request's body, never more than ``MAX_BODY_BYTES`` of it.

    Returns:
        The body, or the refusal that stopped the sandbox from reading (all of) it.
    """
    refusal = framing_refusal(method, path, headers)
    if refusal is not None:
        return RequestBody(b"", refusal=refusal)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return RequestBody(b"".join(chunks), disconnected=True)
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return RequestBody(b"", refusal=_too_large(path))
        chunks.append(chunk)
        if not message.get("more_body", False):
            return RequestBody(b"".join(chunks))
