"""A compressed answer is capped on what it decodes to, not only on the bytes received.

We ask for no Content-Encoding, but a proxy may send one: 16 KB of gzip decodes to 16 MiB.
Every test talks to a real asyncio server on 127.0.0.1:0 through the aiohttp transport.
"""

from __future__ import annotations

import gzip
import logging
import tracemalloc
import zlib
from collections.abc import Callable

import pytest

from amperity_signal.amperity import AmperityClient
from amperity_signal.amperity.caller import MAX_ANSWER_BYTES
from amperity_signal.amperity.decoding import STEP, Decoding, Undecodable
from amperity_signal.errors import AmperityUnavailable
from tests.unit.amperity import test_amperity_oversized_answer as oversized
from tests.unit.amperity.test_amperity_oversized_answer import (
    ACCEPTED,
    Answers,
    Serve,
    profile_of,
)

serve = oversized.serve  # the fixtures: real servers, a client over them, the one warning
client_for = oversized.client_for
warned = oversized.warned

BOMB_SIZE = 16 * MAX_ANSWER_BYTES
# 16 MiB of zeros: about 16 KB sent (built once, outside any measurement).
BOMB = gzip.compress(bytes(BOMB_SIZE), compresslevel=9)
# Far below the 16 MiB the bomb decodes to (twice that, joined, on the old code), far
# above the cap plus a step of decoding, which is all that may be held.
MAX_PEAK_BYTES = 6 * MAX_ANSWER_BYTES


def encoded(status: str, encoding: str, body: bytes, *, chunked: bool) -> bytes:
    """An answer whose body has a Content-Encoding, with a Content-Length or chunked."""
    if not chunked:
        framing = f"Content-Length: {len(body)}"
        return (
            f"HTTP/1.1 {status}\r\nContent-Encoding: {encoding}\r\n{framing}\r\n\r\n".encode()
            + body
        )
    head = (
        f"HTTP/1.1 {status}\r\nContent-Encoding: {encoding}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    pieces = [body[i : i + 4096] for i in range(0, len(body), 4096)]
    chunks = b"".join(b"%x\r\n%b\r\n" % (len(piece), piece) for piece in pieces)
    return head.encode() + chunks + b"0\r\n\r\n"


def deflate(body: bytes, *, raw: bool) -> bytes:
    """``body`` as a deflate Content-Encoding: zlib-wrapped, or raw as some servers send it."""
    packer = zlib.compressobj(wbits=-zlib.MAX_WBITS if raw else zlib.MAX_WBITS)
    return packer.compress(body) + packer.flush()


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_gzip_bomb_profile_stops_being_decoded_past_the_cap(
    serve: Serve,
    client_for: Callable[[str], AmperityClient],
    warned: Callable[[], logging.LogRecord],
    chunked: bool,
) -> None:
    """16 KB of gzip to 16 MiB: decoding stops one step past 1 MiB; AMPERITY_BAD_RESPONSE."""
    answers = Answers(encoded("200 OK", "gzip", BOMB, chunked=chunked), ACCEPTED)
    server = await serve(answers)
    client = client_for(server.url)

    tracemalloc.start()
    try:
        with pytest.raises(AmperityUnavailable) as caught:
            await client.get_profile("p-1", deadline=None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    error = caught.value
    assert (error.reason, error.status_code, error.attempts) == ("AMPERITY_BAD_RESPONSE", 200, 1)
    assert peak < MAX_PEAK_BYTES, f"{peak:,} bytes held at the peak"
    logged = warned()
    decoded: int = logged.__dict__["answer_bytes"]
    assert MAX_ANSWER_BYTES < decoded <= MAX_ANSWER_BYTES + STEP  # not the 16 MiB
    assert "'gzip' Content-Encoding decodes past the 1,048,576-byte cap" in error.message
    assert f"decoding stopped at {decoded:,} bytes" in error.message
    # The answer was not read to its end: the connection is closed, the next call works.
    result = await client.post_event({"event": "x"}, deadline=None)
    assert (result.status_code, answers.requests) == (202, 2)


@pytest.mark.parametrize("status", ["202 Accepted", "503 Service Unavailable"])
async def test_an_event_answered_with_a_gzip_bomb_is_left_to_its_status(
    serve: Serve,
    client_for: Callable[[str], AmperityClient],
    warned: Callable[[], logging.LogRecord],
    status: str,
) -> None:
    """The status decides: a 202 bomb is delivered once, a 503 bomb retried as a 503."""
    answers = Answers(encoded(status, "gzip", BOMB, chunked=True), ACCEPTED)
    server = await serve(answers)

    result = await client_for(server.url).post_event({"event": "x"}, deadline=None)

    attempts = 1 if status.startswith("202") else 2
    assert (result.status_code, result.call.attempts, answers.requests) == (202, attempts, attempts)
    logged = warned()
    assert logged.getMessage().startswith(f"Amperity answered {status[:3]} to the events request")
    assert MAX_ANSWER_BYTES < logged.__dict__["answer_bytes"] <= MAX_ANSWER_BYTES + STEP


@pytest.mark.parametrize(
    ("encoding", "pack"),
    [
        ("gzip", gzip.compress),
        ("deflate", lambda body: deflate(body, raw=False)),
        ("deflate", lambda body: deflate(body, raw=True)),
        ("gzip, deflate", lambda body: deflate(gzip.compress(body), raw=False)),
    ],
    ids=["gzip", "deflate", "raw-deflate", "gzip-then-deflate"],
)
async def test_a_compressed_profile_decoding_to_the_cap_is_read_and_one_byte_more_is_not(
    serve: Serve,
    client_for: Callable[[str], AmperityClient],
    encoding: str,
    pack: Callable[[bytes], bytes],
) -> None:
    """Honest compressed answers decode as httpx decoded them, up to exactly 1 MiB."""
    at_cap = pack(profile_of(MAX_ANSWER_BYTES))
    over = pack(profile_of(MAX_ANSWER_BYTES + 1))
    answers = Answers(
        encoded("200 OK", encoding, at_cap, chunked=False),
        encoded("200 OK", encoding, over, chunked=True),
    )
    client = client_for((await serve(answers)).url)

    profile = await client.get_profile("p-1", deadline=None)
    assert profile is not None
    assert len(profile.attributes["pad"]) > MAX_ANSWER_BYTES - 100
    with pytest.raises(AmperityUnavailable) as caught:
        await client.get_profile("p-1", deadline=None)
    assert f"decoding stopped at {MAX_ANSWER_BYTES + 1:,} bytes" in caught.value.message


def test_decoding_hands_a_bomb_back_in_steps() -> None:
    """No piece is over a step, whatever one read decodes to; other encodings pass as sent."""
    decoding = Decoding("gzip")
    sizes = [len(piece) for piece in decoding.decode(BOMB)]
    sizes += [len(piece) for piece in decoding.flush()]

    assert max(sizes) == STEP
    assert sum(sizes) == BOMB_SIZE
    assert list(Decoding("br, identity").decode(b"as sent")) == [b"as sent"]
    with pytest.raises(Undecodable, match="'deflate'"):
        list(Decoding("deflate").decode(b"\xff" * 32))
