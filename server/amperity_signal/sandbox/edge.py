"""The sandbox's front door for ``/prof`` requests: ids, faults, framing, recording, counting.

It wraps the whole Starlette app (outside its error middleware) so that it sees every
status answered, and so that it holds the server's own ``receive`` when a fault drops the
connection or cuts an answer's body.

Order: injected faults → the framing refusals of :mod:`.framing` (411, 400, 413) → the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from amperity_signal.sandbox import jsonbody
from amperity_signal.sandbox.faults import HOLD_LIMIT_SECONDS, FaultOutcome
from amperity_signal.sandbox.framing import RequestBody, read_body
from amperity_signal.sandbox.oversized import OversizedSender
from amperity_signal.sandbox.records import DROPPED, RequestRecord, redact_headers
from amperity_signal.sandbox.responses import error, ids, set_ids
from amperity_signal.sandbox.state import SandboxState

API_PREFIX = "/prof/"
log = logging.getLogger("amperity_signal.sandbox")
MAX_MESSAGE_ID_CHARS = 200
# nginx's "client closed request": the client left before its body was whole, or during an
# injected latency or hold. Nobody is left to answer, so nothing is sent.
CLIENT_GONE = 499


class ConnectionDropped(Exception):
    """Raised when a drop or cut-body fault fires outside a real server (httpx's ASGITransport).

    A real uvicorn connection is aborted (drop) or closed (cut body) instead, so that the
    client sees a reset or an incomplete body.
    """


def request_kind(path: str) -> str:
    """``events``, ``lookup``, ``profile`` or ``other`` for a ``/prof`` path."""
    for prefix, kind in (
        ("/prof/events/", "events"),
        ("/prof/lookup/", "lookup"),
        ("/prof/profiles/", "profile"),
    ):
        if path.startswith(prefix):
            return kind
    return "other"


def event_message_id(data: bytes) -> str | None:
    """An event body's top-level ``message_id`` string (cut short), or None.

    Read before any fault or check answers, so that a dropped, throttled or refused
    attempt is tied to its event too. A body that is not a JSON object has none.
    """
    try:
        event = jsonbody.loads(data)
    except ValueError:
        return None
    value = event.get("message_id") if isinstance(event, dict) else None
    return value[:MAX_MESSAGE_ID_CHARS] if isinstance(value, str) else None


class SandboxEdge:
    """ASGI middleware applying faults to, and recording, every ``/prof`` request."""

    def __init__(
        self, app: ASGIApp, state: SandboxState, allowed_methods: Callable[[Scope], str]
    ) -> None:
        self._app = app
        self._state = state
        self._allowed_methods = allowed_methods

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handles one ASGI connection."""
        if scope["type"] != "http" or not scope["path"].startswith(API_PREFIX):
            await self._app(scope, receive, send)
            return
        state = self._state
        now = state.clock()
        set_ids(scope, f"req-{state.new_hex(16)}", state.new_hex(32), now)
        headers = Headers(scope=scope)
        record = RequestRecord(
            request_id=ids(scope)["request_id"],
            timestamp=now,
            method=scope["method"],
            path=scope["path"],
            query=scope.get("query_string", b"").decode("latin-1"),
            kind=request_kind(scope["path"]),
            tenant=headers.get("amperity-tenant"),
            headers=redact_headers(headers.items()),
        )
        started = time.perf_counter()
        body = await read_body(receive, scope["method"], scope["path"], headers)
        if record.kind == "events" and body.data:
            record.message_id = event_message_id(body.data)
        # A client gone before its body was whole gets no answer, and uses up no fault.
        outcome = (
            FaultOutcome() if body.disconnected else state.faults.decide(record.tenant, record.kind)
        )
        state.in_flight[record.request_id] = record
        journal = _Journal(state, record, started)
        try:
            await self._answer(
                scope,
                receive=receive,
                send=send,
                body=body,
                outcome=outcome,
                journal=journal,
            )
        finally:
            journal.write()  # a request that got no answer (dropped, client gone)
            record.duration_ms = (time.perf_counter() - started) * 1000
            if log.isEnabledFor(logging.DEBUG):
                _log_answered(record)

    async def _answer(
        self,
        scope: Scope,
        *,
        receive: Receive,
        send: Send,
        body: RequestBody,
        outcome: FaultOutcome,
        journal: _Journal,
    ) -> None:
        record = journal.record
        if body.disconnected:
            # Handing a cut body to the API made Starlette raise ClientDisconnect: a 500 in
            # the inspector that no client saw, and a traceback in the sandbox's log.
            record.status = CLIENT_GONE
            return
        if outcome.delay_seconds and not await _wait_unless_gone(receive, outcome.delay_seconds):
            record.status = CLIENT_GONE
            return
        if outcome.hold and not await _wait_unless_gone(
            receive, HOLD_LIMIT_SECONDS, self._state.holds.hold()
        ):
            record.status = CLIENT_GONE
            return
        if outcome.drop:
            record.status = DROPPED
            await _drop_connection(receive)
            return

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                if outcome.accept_status is not None and message["status"] == 202:
                    message = {**message, "status": outcome.accept_status}
                record.status = message["status"]
                journal.write()  # before the client can have the answer
            await send(message)

        answer: Send = recording_send
        if outcome.cut_body and scope["method"] != "HEAD":  # a HEAD answer has no body to cut
            answer = _BodyCutter(recording_send, receive, journal)
        if outcome.oversized_body is not None and scope["method"] != "HEAD":
            # Before a cut, so that a cut fault cuts the oversized body.
            answer = OversizedSender(answer, outcome.oversized_body, gzipped=outcome.oversized_gzip)

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body.data, "more_body": False}

        if outcome.status is not None:
            # delta-seconds: a whole number, never "0.5" (Fault.from_json rounds up).
            extra = {} if outcome.retry_after is None else {"Retry-After": str(outcome.retry_after)}
            if outcome.status == 405:
                # HTTP requires it of every 405 (RFC 9110, section 15.5.6), injected or not.
                extra["Allow"] = self._allowed_methods(scope)
            response = error(scope, outcome.status, "injected fault (sandbox)", extra)
            await response(scope, replay, answer)
            return
        if body.refusal is not None:
            refused = error(scope, body.refusal.status, body.refusal.message)
            await refused(scope, replay, answer)
            return
        await self._app(scope, replay, answer)


class _Journal:
    """Puts one request in the journal and the stats, once: before its answer goes out.

    A client that has its answer finds its request in ``GET /_sandbox/requests`` (until
    session 27 it was journaled once the answer was written out, after the client could
    have it). The record is the journal's own: a body cut after it is journaled shows,
    and its ``duration_ms``, set once the answer is whole, too.
    """

    def __init__(self, state: SandboxState, record: RequestRecord, started: float) -> None:
        self.record = record
        self._state = state
        self._started = started
        self._written = False

    def write(self) -> None:
        """Journals and counts the request, unless it already is: it leaves ``in_flight``."""
        if self._written:
            return
        self._written = True
        record, state = self.record, self._state
        record.duration_ms = (time.perf_counter() - self._started) * 1000
        state.in_flight.pop(record.request_id, None)
        state.requests.add(record)
        state.stats.add(record)

    def cut(self) -> None:
        """Marks the request's body as cut, in its record and in the stats."""
        self.record.body_cut = True
        self._state.stats.count_cut(self.record)


class _BodyCutter:
    """An ASGI ``send`` that passes the status line and headers, then cuts the body.

    The first non-empty body chunk goes out halved (the headers' ``Content-Length`` still
    announces the whole), then the connection is closed, so the client has the status and
    an incomplete body: Amperity's acceptance with its answer lost on the way. An answer
    without a body (a 204) has nothing to cut and goes out whole.
    """

    def __init__(self, send: Send, receive: Receive, journal: _Journal) -> None:
        self._send = send
        self._receive = receive
        self._journal = journal
        self._cut = False

    async def __call__(self, message: Message) -> None:
        """Sends one ASGI message, or cuts the answer at its first body bytes."""
        if self._cut:
            return  # the app's further chunks have no connection to go to
        chunk = message.get("body", b"") if message["type"] == "http.response.body" else b""
        if not chunk:
            await self._send(message)
            return
        self._cut = True
        self._journal.cut()
        await self._send({**message, "body": chunk[: len(chunk) // 2], "more_body": True})
        await _close_after_sent(self._receive)


def _log_answered(record: RequestRecord) -> None:
    """One debug line per ``/prof`` request, as the inspector records it (no query, no token)."""
    log.debug(
        "%s %s answered %s",
        record.method,
        record.path,
        record.status,
        extra={
            "request_id": record.request_id,
            "tenant": record.tenant,
            "kind": record.kind,
            "status": record.status,
            "duration_ms": round(record.duration_ms, 1),
        },
    )


async def _wait_unless_gone(
    receive: Receive, seconds: float, released: asyncio.Future[None] | None = None
) -> bool:
    """Waits out an injected latency, or a hold until ``released``; False if the client hung up.

    What arrives of a body the framing left unread (a refused one) is discarded: it
    neither ends the wait early nor is kept. A wait cut by a stop (its task cancelled)
    leaves nothing behind: the hold is given up, the listening cancelled.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    listening: asyncio.Future[Message] | None = None
    try:
        while (left := deadline - loop.time()) > 0:
            listening = asyncio.ensure_future(receive())
            waited: set[asyncio.Future[Any]] = {listening}
            if released is not None:
                waited.add(released)
            done, _ = await asyncio.wait(waited, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            if listening not in done:
                return True  # the time is up, or the hold released
            if str(listening.result()["type"]) == "http.disconnect":
                return False
        return True
    finally:
        if released is not None:
            released.cancel()
        if listening is not None and not listening.done():
            listening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listening


async def _close_after_sent(receive: Receive) -> None:
    """Closes the client's connection once what was sent of the answer is on the wire.

    ``transport.close`` (not ``abort``) writes out what is buffered first, so the status
    line and headers reach the client before the hang-up. Returns once uvicorn has seen
    the disconnect, so that it neither sends more nor logs an unfinished answer.
    """
    cycle = getattr(receive, "__self__", None)
    close = getattr(getattr(cycle, "transport", None), "close", None)
    if not callable(close):
        raise ConnectionDropped("the sandbox cut this answer's body (fault injection)")
    close()
    while str((await receive())["type"]) != "http.disconnect":
        pass  # the rest of a body the framing left unread (a refused one) is discarded


async def _drop_connection(receive: Receive) -> None:
    """Closes the client's connection without any response.

    Under uvicorn, ``receive`` is a method of the connection's request cycle, which holds
    the transport: aborting it resets the connection, and once uvicorn has seen the
    disconnect it sends nothing (not even its usual 500 for an app that did not answer).
    """
    cycle = getattr(receive, "__self__", None)
    abort = getattr(getattr(cycle, "transport", None), "abort", None)
    if not callable(abort):
        raise ConnectionDropped("the sandbox dropped this connection (fault injection)")
    abort()
    for _ in range(100):
        if getattr(cycle, "disconnected", True):
            return
        await asyncio.sleep(0.001)
