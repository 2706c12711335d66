"""An answer's body is read up to ``MAX_ANSWER_BYTES`` (1 MiB), never further; the status decides.

Every test talks to a real asyncio server on 127.0.0.1:0 through the aiohttp transport, so
what is proved is what production does: a Content-Length over the cap is not read at all,
a body without one (chunked, or ended by the close) stops being read just past the cap,
and the connection such an answer leaves mid-body is closed, not pooled.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import orjson
import pytest

from amperity_signal.amperity import AmperityClient, vendor_call
from amperity_signal.amperity.aiohttp_transport import AiohttpTransport
from amperity_signal.amperity.caller import MAX_ANSWER_BYTES
from amperity_signal.config import IntegrationSettings
from amperity_signal.errors import AmperityUnavailable
from tests.unit.amperity import test_amperity_aiohttp_transport as transport_tests
from tests.unit.amperity.faketime import FakeTime
from tests.unit.amperity.test_amperity_aiohttp_transport import Server, post, read_request

ClientFactory = Callable[..., AmperityClient]
serve = transport_tests.serve  # the fixture: real servers on 127.0.0.1:0
# Stands for anything a huge body could hold: it must never reach an error or a log.
MARKER = b"BODY-MARKER-5d1e"
HUGE = 8 * MAX_ANSWER_BYTES
ACCEPTED = b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n"


def filler(size: int) -> bytes:
    """``size`` bytes of a body that would be read into memory whole by the old code."""
    return (MARKER * (size // len(MARKER) + 1))[:size]


def sized(status: str, body: bytes) -> bytes:
    """An answer with a Content-Length."""
    return f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


@dataclass
class Huge:
    """A body of ``size`` bytes sent in 64 KiB pieces, chunked or ended by closing."""

    status: str
    chunked: bool
    size: int = HUGE


Reply = bytes | Huge


class Answers:
    """A server's answers to requests in turn (the last one once they run out)."""

    def __init__(self, *answers: Reply) -> None:
        self.answers = list(answers)
        self.requests = 0

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await read_request(reader):
                self.requests += 1
                answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
                if isinstance(answer, Huge):
                    await stream(answer, writer)
                    return  # a close-delimited body ends the connection; a chunked one too here
                writer.write(answer)
                await writer.drain()
        except ConnectionError:  # the client closed a connection it would not read to its end
            return


Serve = Callable[[Answers], Awaitable[Server]]


async def stream(answer: Huge, writer: asyncio.StreamWriter) -> None:
    """``answer``'s status line, then its body in 64 KiB pieces."""
    framing = "Transfer-Encoding: chunked" if answer.chunked else "Connection: close"
    writer.write(f"HTTP/1.1 {answer.status}\r\n{framing}\r\n\r\n".encode())
    piece = filler(64 * 1024)
    for _ in range(answer.size // len(piece)):
        writer.write(b"%x\r\n%b\r\n" % (len(piece), piece) if answer.chunked else piece)
        await writer.drain()
    if answer.chunked:
        writer.write(b"0\r\n\r\n")
        await writer.drain()


@pytest.fixture
async def client_for(
    make_client: ClientFactory, integration: IntegrationSettings
) -> AsyncIterator[Callable[[str], AmperityClient]]:
    """A client over the real aiohttp transport, one connection, on a fake backoff clock."""
    transports: list[AiohttpTransport] = []
    time = FakeTime()

    def build(url: str) -> AmperityClient:
        transport = AiohttpTransport(max_connections=1)
        transports.append(transport)
        settings = integration.model_copy(update={"api_base_url": url})
        return make_client(transport=transport, integration=settings, shards=1, sleep=time.sleep)

    yield build
    for transport in transports:
        await transport.aclose()


@pytest.fixture
def warned(caplog: pytest.LogCaptureFixture) -> Callable[[], logging.LogRecord]:
    """The one warning logged for an answer too large to read (fails unless exactly one)."""
    caplog.set_level(logging.WARNING, logger="amperity_signal.amperity")

    def the_warning() -> logging.LogRecord:
        (logged,) = [r for r in caplog.records if "too large to read" in r.getMessage()]
        return logged

    return the_warning


def profile_of(size: int) -> bytes:
    """A profile whose JSON is exactly ``size`` bytes."""
    empty = {"collection_id": "apc-vPsQheAm", "profile_id": "p-1", "attributes": {"pad": ""}}
    room = size - len(orjson.dumps(empty))
    return orjson.dumps({**empty, "attributes": {"pad": "x" * room}})


async def test_a_profile_at_the_cap_is_read_and_one_byte_over_it_is_refused_unread(
    serve: Serve,
    client_for: Callable[[str], AmperityClient],
    warned: Callable[[], logging.LogRecord],
) -> None:
    """Content-Length MAX: a profile. MAX + 1: AMPERITY_BAD_RESPONSE, once, naming both sizes."""
    at_cap = profile_of(MAX_ANSWER_BYTES)
    over = profile_of(MAX_ANSWER_BYTES + 1)
    answers = Answers(sized("200 OK", at_cap), sized("200 OK", over), sized("200 OK", at_cap))
    server = await serve(answers)
    client = client_for(server.url)

    profile = await client.get_profile("p-1", deadline=None)
    assert profile is not None and len(profile.attributes["pad"]) > MAX_ANSWER_BYTES - 100
    with pytest.raises(AmperityUnavailable) as caught:
        await client.get_profile("p-1", deadline=None)

    error = caught.value
    assert (error.reason, error.status_code, error.attempts) == ("AMPERITY_BAD_RESPONSE", 200, 1)
    assert "Content-Length 1,048,577 bytes, over the 1,048,576-byte cap" in error.message
    assert "not read" in error.message
    call = vendor_call(error)
    assert call is not None and call.attempts == 1  # the same answer would come again
    logged = warned()
    assert logged.getMessage().startswith("Amperity answered 200 to the profile request")
    assert "1,048,577" in logged.getMessage() and "1,048,576" in logged.getMessage()
    # The unread body left the connection mid-answer: it is closed, the next call opens one.
    assert await client.get_profile("p-1", deadline=None) is not None
    assert (answers.requests, server.connections) == (3, 2)


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "close-delimited"])
async def test_a_profile_without_content_length_stops_being_read_past_the_cap(
    serve: Serve,
    client_for: Callable[[str], AmperityClient],
    warned: Callable[[], logging.LogRecord],
    caplog: pytest.LogCaptureFixture,
    chunked: bool,
) -> None:
    """8 MiB with no Content-Length: reading stops just past 1 MiB; the body is never shown."""
    answers = Answers(Huge("200 OK", chunked=chunked), ACCEPTED)
    server = await serve(answers)
    client = client_for(server.url)

    with pytest.raises(AmperityUnavailable) as caught:
        await client.get_profile("p-1", deadline=None)

    error = caught.value
    assert (error.reason, error.attempts) == ("AMPERITY_BAD_RESPONSE", 1)
    assert "no Content-Length, and reading stopped past the 1,048,576-byte cap" in error.message
    logged = warned()
    read: int = logged.__dict__["answer_bytes"]
    assert MAX_ANSWER_BYTES < read < 2 * MAX_ANSWER_BYTES  # not the 8 MiB sent
    assert f"at {read:,} bytes" in error.message
    for shown in (error.message, str(error.metadata), caplog.text):
        assert MARKER.decode() not in shown
    # The connection was closed mid-body: the next call gets a new one.
    result = await client.post_event({"event": "x"}, deadline=None)
    assert result.status_code == 202
    assert server.connections == 2


@pytest.mark.parametrize(
    "answer",
    [sized("202 Accepted", filler(HUGE)), Huge("202 Accepted", chunked=True)],
    ids=["content-length", "chunked"],
)
async def test_an_event_answered_202_with_a_huge_body_is_delivered_once(
    serve: Serve,
    client_for: Callable[[str], AmperityClient],
    answer: Reply,
    warned: Callable[[], logging.LogRecord],
) -> None:
    """The status decides: a 202 is Amperity's acceptance whatever its body, not sent again."""
    answers = Answers(answer)
    server = await serve(answers)

    result = await client_for(server.url).post_event({"event": "x"}, deadline=None)

    assert (result.status_code, result.call.attempts) == (202, 1)
    assert answers.requests == 1
    logged = warned()
    assert logged.getMessage().startswith("Amperity answered 202 to the events request")
    assert logged.getMessage().endswith("Amperity's acceptance, so it is not sent again")
    assert MAX_ANSWER_BYTES < logged.__dict__["answer_bytes"] < 2 * HUGE


async def test_a_503_with_a_huge_body_is_retried_as_a_503(
    serve: Serve,
    client_for: Callable[[str], AmperityClient],
    warned: Callable[[], logging.LogRecord],
) -> None:
    """An error answer's body too large to read leaves its status to decide: retried."""
    answers = Answers(Huge("503 Service Unavailable", chunked=True), ACCEPTED)
    server = await serve(answers)

    result = await client_for(server.url).post_event({"event": "x"}, deadline=None)

    # Retried once on a new connection (the unread one closed, not pooled and found dead).
    assert (result.status_code, result.call.attempts) == (202, 2)
    assert (answers.requests, server.connections) == (2, 2)
    logged = warned()
    assert logged.getMessage().startswith("Amperity answered 503 to the events request")
    assert logged.getMessage().endswith(": its status decides")


async def test_the_transport_hands_a_body_over_in_pieces_not_read_whole(
    serve: Serve,
) -> None:
    """An 8 MiB body comes as chunks; dropping it after one closes the connection."""
    answers = Answers(sized("200 OK", filler(HUGE)), ACCEPTED)
    server = await serve(answers)
    transport = AiohttpTransport(max_connections=1)
    try:
        response = await transport.handle_async_request(post(server.url))
        async for first in response.aiter_raw():
            assert len(first) < HUGE
            break
        await response.aclose()
        second = await transport.handle_async_request(post(server.url))
        await second.aread()
        await second.aclose()
    finally:
        await transport.aclose()

    assert (second.status_code, server.connections) == (202, 2)
