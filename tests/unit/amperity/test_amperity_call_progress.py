"""A cancelled call's ``CallProgress`` says exactly how far its request got.

Not sent while it waited for a rate-limit slot, a connection or a retry (naming the
attempt), sent once a transport had it, answered once a status came back. The aiohttp
transport is driven against real sockets: a listener that never accepts, a server that
reads the request and never answers, one that answers 202 and never finishes the body.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx
import pytest

from amperity_signal.amperity import AmperityClient, CallProgress, MemoryRateLimiter, Stage
from amperity_signal.amperity.aiohttp_transport import AiohttpTransport
from amperity_signal.config import IntegrationSettings
from tests.support import until
from tests.unit.amperity.test_amperity_aiohttp_transport import read_request

ClientFactory = Callable[..., AmperityClient]


class SilentAmperity(httpx.AsyncBaseTransport):
    """Takes requests and never answers; ``asked`` counts them."""

    def __init__(self) -> None:
        self.asked = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.asked += 1
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


class StuckSleep:
    """A sleep that never ends (until cancelled); ``slept`` is set once it is entered."""

    def __init__(self) -> None:
        self.slept = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        self.slept.set()
        await asyncio.Event().wait()


async def cancelled(call: Awaitable[Any], ready: Callable[[], bool]) -> None:
    """Start ``call``, cancel it once ``ready`` holds, and check that it was cancelled."""
    task = asyncio.ensure_future(call)
    await until(lambda: ready() or task.done())
    assert not task.done(), task.result()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def post(client: AmperityClient, progress: CallProgress) -> Awaitable[Any]:
    """An event POST without a deadline, following ``progress``."""
    return client.post_event({"type": "track"}, deadline=None, progress=progress)


async def test_a_call_cancelled_while_waiting_for_a_rate_limit_slot_was_not_sent(
    make_client: ClientFactory, integration: IntegrationSettings
) -> None:
    """One request/s, one in flight: the next waits for its slot, and leaves unsent."""
    amperity = SilentAmperity()
    sleep = StuckSleep()
    client = make_client(
        transport=amperity,
        integration=integration.model_copy(update={"rate_limit_per_second": 1}),
        limiter=MemoryRateLimiter(sleep=sleep),
    )
    first = asyncio.ensure_future(post(client, CallProgress()))
    progress = CallProgress()

    await cancelled(post(client, progress), sleep.slept.is_set)

    assert (progress.stage, progress.attempt, progress.unanswered) == (Stage.RATE_LIMIT, 1, 0)
    assert amperity.asked == 1
    first.cancel()


async def test_a_call_cancelled_while_waiting_for_a_connection_was_not_sent(
    make_client: ClientFactory,
) -> None:
    """Every pooled connection busy: the call waits for one, and leaves unsent."""
    amperity = SilentAmperity()
    client = make_client(transport=amperity, shards=1, max_in_flight_per_shard=1)
    first = asyncio.ensure_future(post(client, CallProgress()))
    await until(lambda: amperity.asked == 1)
    progress = CallProgress()

    await cancelled(post(client, progress), lambda: client.waiting_for_connection == 1)

    assert (progress.stage, progress.attempt) == (Stage.POOL, 1)
    assert amperity.asked == 1
    assert client.waiting_for_connection == 0
    first.cancel()


async def test_a_call_cancelled_in_backoff_names_the_attempt_it_was_waiting_to_send(
    make_client: ClientFactory,
) -> None:
    """Answered 503, waiting to retry: attempt 2 was not sent, attempt 1 was answered."""
    asked: list[httpx.Request] = []

    def unavailable(request: httpx.Request) -> httpx.Response:
        asked.append(request)
        return httpx.Response(503)

    sleep = StuckSleep()
    client = make_client(unavailable, sleep=sleep)
    progress = CallProgress()

    await cancelled(post(client, progress), sleep.slept.is_set)

    assert (progress.stage, progress.attempt, progress.status) == (Stage.BACKOFF, 2, 503)
    assert progress.unanswered == 0
    assert len(asked) == 1


@pytest.mark.parametrize(
    ("failure", "unanswered"),
    [(httpx.ReadTimeout("no answer"), 1), (httpx.ConnectError("refused"), 0)],
)
async def test_backoff_after_a_failure_remembers_whether_that_attempt_may_have_arrived(
    make_client: ClientFactory, failure: Exception, unanswered: int
) -> None:
    """A read timeout came after the request left (it may have arrived); a refusal did not."""

    def failing(request: httpx.Request) -> httpx.Response:
        raise failure

    sleep = StuckSleep()
    client = make_client(failing, sleep=sleep)
    progress = CallProgress()

    await cancelled(post(client, progress), sleep.slept.is_set)

    assert (progress.stage, progress.attempt, progress.status) == (Stage.BACKOFF, 2, 0)
    assert progress.unanswered == unanswered


async def test_a_transport_that_says_nothing_counts_as_sending_once_it_has_the_request(
    make_client: ClientFactory,
) -> None:
    """Without word from the transport, a request handed to it may have left."""
    amperity = SilentAmperity()
    client = make_client(transport=amperity)
    progress = CallProgress()

    await cancelled(post(client, progress), lambda: amperity.asked == 1)

    assert (progress.stage, progress.attempt) == (Stage.SENDING, 1)


@contextmanager
def never_accepting() -> Iterator[str]:
    """A listener whose one-place backlog is full: a further connect never completes."""
    with socket.socket() as listener, socket.socket() as filler:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        filler.connect(listener.getsockname())
        host, port = listener.getsockname()
        yield f"http://{host}:{port}"


@pytest.fixture
async def aiohttp_client(make_client: ClientFactory) -> AsyncIterator[ClientFactory]:
    """Clients over the real aiohttp transport, one connection, closed afterwards."""
    transports: list[AiohttpTransport] = []

    def build(base_url: str) -> AmperityClient:
        transport = AiohttpTransport(max_connections=1)
        transports.append(transport)
        settings = IntegrationSettings.model_validate(
            {
                "id": "acme-web",
                "pipeline_key": "pk_live_acme",
                "tenant_subdomain": "acme",
                "tenant_id": "acme-tenant",
                "api_key": "e.y.j-ingest-key",
                "event_stream_id": "esm-abc123",
                "source_value": "datafly",
                "api_base_url": base_url,
            }
        )
        return make_client(transport=transport, integration=settings, shards=1)

    yield build
    for transport in transports:
        await transport.aclose()


async def test_aiohttp_cancelled_while_opening_its_connection_sent_nothing(
    aiohttp_client: ClientFactory,
) -> None:
    """Stuck in connect: the request was never written, so the call stays CONNECTING."""
    progress = CallProgress()
    with never_accepting() as url:
        client = aiohttp_client(url)
        await cancelled(post(client, progress), lambda: progress.stage is Stage.CONNECTING)
        # The connect cannot finish, so however long the call had it would not have moved on.
        assert progress.stage is Stage.CONNECTING


@asynccontextmanager
async def answering(answer: bytes) -> AsyncIterator[tuple[str, asyncio.Event]]:
    """A server that reads one request, writes ``answer``, then holds on until the end."""
    arrived, done = asyncio.Event(), asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await read_request(reader):
            arrived.set()
            writer.write(answer)
            await writer.drain()
        await done.wait()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    host, port = server.sockets[0].getsockname()[:2]
    try:
        yield f"http://{host}:{port}", arrived
    finally:
        done.set()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    ("answer", "stage", "status"),
    [
        (b"", Stage.SENDING, 0),
        (b"HTTP/1.1 202 Accepted\r\nContent-Length: 40\r\n\r\n{", Stage.ANSWERED, 202),
    ],
)
async def test_aiohttp_cancelled_after_sending_is_sent_or_answered_as_the_server_saw_it(
    aiohttp_client: ClientFactory, answer: bytes, stage: Stage, status: int
) -> None:
    """Request read, no answer: SENDING; 202 and a body that never ends: ANSWERED 202."""
    progress = CallProgress()
    async with answering(answer) as (url, arrived):
        client = aiohttp_client(url)
        await cancelled(
            post(client, progress),
            lambda: arrived.is_set() and (not answer or progress.stage is Stage.ANSWERED),
        )

    assert (progress.stage, progress.status, progress.attempt) == (stage, status, 1)
