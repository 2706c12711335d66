"""A status line arrived, then the body was cut off: the status decides, never a retry of it.

An event POST answered 2xx was accepted (the status line is Amperity's answer), so it is
not sent again; a profile cannot be read from part of a body, so a cut 200 is retried; a
non-2xx keeps its status's handling. Bodies are cut by a stream that fails when read, as
the aiohttp transport's does (``test_amperity_aiohttp_transport.py`` checks that part).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

import httpx
import orjson
import pytest

from amperity_signal.amperity import AmperityClient, vendor_call
from amperity_signal.config import IntegrationSettings
from amperity_signal.errors import AmperityMisconfigured, AmperityRejected, AmperityUnavailable
from amperity_signal.metrics import Metrics
from tests.unit.amperity.conftest import INGEST_CANARY, PROFILE_CANARY
from tests.unit.amperity.faketime import FakeTime

ClientFactory = Callable[..., AmperityClient]
PROFILE = {"collection_id": "apc-vPsQheAm", "profile_id": "p-whole", "attributes": {"A": 1}}


class CutStream(httpx.AsyncByteStream):
    """A body that fails after its first bytes (a reset), or never comes (``stall``)."""

    def __init__(self, *, stall: bool = False) -> None:
        self._stall = stall

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self._stall:
            await asyncio.Event().wait()
        yield b'{"sta'
        # The token in the failure's text stands for anything a peer could echo back.
        raise httpx.ReadError(f"connection reset by peer ({INGEST_CANARY} {PROFILE_CANARY})")


def cut(
    status: int, headers: dict[str, str] | None = None, *, stall: bool = False
) -> httpx.Response:
    """An answer with ``status`` and ``headers`` whose body is cut off when read."""
    return httpx.Response(status, headers=headers, stream=CutStream(stall=stall))


class Script:
    """A MockTransport handler answering from a list (the last answer once it runs out)."""

    def __init__(self, *answers: Callable[[], httpx.Response]) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return answer()


def whole_profile() -> httpx.Response:
    return httpx.Response(200, content=orjson.dumps(PROFILE))


@pytest.fixture
def time() -> FakeTime:
    """The fake clock and recorded sleeps."""
    return FakeTime()


@pytest.mark.parametrize(("status", "dropping"), [(202, False), (204, True)])
async def test_an_event_answered_2xx_whose_body_is_cut_is_accepted_and_not_sent_again(
    make_client: ClientFactory,
    time: FakeTime,
    status: int,
    dropping: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """202/204 then a reset: one request, the result (204 still flagged), the cut noted."""
    caplog.set_level(logging.WARNING, logger="amperity_signal.amperity")
    script = Script(lambda: cut(status), lambda: httpx.Response(202))
    client = make_client(script, clock=time.clock, sleep=time.sleep)

    result = await client.post_event({"event": "purchase"}, deadline=None)

    assert len(script.requests) == 1
    assert (result.status_code, result.dropping) == (status, dropping)
    assert (result.call.status_code, result.call.attempts) == (status, 1)
    assert result.body_cut.startswith("connection reset by peer")
    assert time.sleeps == []
    (logged,) = [r for r in caplog.records if "body was cut off" in r.getMessage()]
    assert logged.levelno == logging.WARNING
    assert f"Amperity answered {status} to the events request" in logged.getMessage()
    assert "so it is not sent again" in logged.getMessage()
    for secret in (INGEST_CANARY, PROFILE_CANARY):
        assert secret not in result.body_cut
        assert secret not in caplog.text


async def test_an_event_answered_202_whose_body_never_comes_is_accepted_at_the_timeout(
    make_client: ClientFactory, integration: IntegrationSettings
) -> None:
    """202 and a body that stalls past the attempt's timeout: accepted, one request."""
    script = Script(lambda: cut(202, stall=True), lambda: httpx.Response(202))
    quick = integration.model_copy(update={"request_timeout": 0.05})

    result = await make_client(script, integration=quick).post_event({}, deadline=None)

    assert len(script.requests) == 1
    assert (result.status_code, result.call.attempts) == (202, 1)
    assert result.body_cut == "the read timed out"


async def test_a_400_whose_body_is_cut_is_a_permanent_400(
    make_client: ClientFactory, time: FakeTime
) -> None:
    """400 then a reset: AMPERITY_BAD_REQUEST at once, not a retried connection failure."""
    script = Script(lambda: cut(400))
    client = make_client(script, clock=time.clock, sleep=time.sleep)

    with pytest.raises(AmperityRejected) as caught:
        await client.post_event({}, deadline=None)

    assert len(script.requests) == 1
    assert (caught.value.reason, caught.value.status_code) == ("AMPERITY_BAD_REQUEST", 400)
    call = vendor_call(caught.value)
    assert call is not None and (call.status_code, call.attempts) == (400, 1)


async def test_a_503_whose_body_is_cut_is_retried_after_its_retry_after(
    make_client: ClientFactory, time: FakeTime, metrics: Metrics
) -> None:
    """503 with Retry-After then a reset: retried as a 503, after the wait it asked for."""
    script = Script(lambda: cut(503, {"Retry-After": "2"}), lambda: httpx.Response(202))
    client = make_client(script, clock=time.clock, sleep=time.sleep)

    result = await client.post_event({}, deadline=None)

    assert (len(script.requests), result.call.attempts, result.body_cut) == (2, 2, "")
    assert time.sleeps == [2.0]
    labels = {"integration": "acme-web", "endpoint": "events", "cause": "503"}
    assert metrics.registry.get_sample_value("amperity_signal_amperity_retries_total", labels)


async def test_a_redirect_whose_body_is_cut_still_names_its_location(
    make_client: ClientFactory, time: FakeTime
) -> None:
    """308 with Location then a reset: the redirect error, naming the base URL to set."""
    location = "https://app.amperity.com/prof/events/esm-abc123"
    script = Script(lambda: cut(308, {"Location": location}))
    client = make_client(script, clock=time.clock, sleep=time.sleep)

    with pytest.raises(AmperityRejected) as caught:
        await client.post_event({}, deadline=None)

    assert len(script.requests) == 1
    assert caught.value.metadata["location"] == location
    assert "api_base_url = 'https://app.amperity.com'" in caught.value.message


@pytest.mark.parametrize("call", ["lookup", "get_profile"])
async def test_a_profile_answered_200_whose_body_is_cut_is_retried_not_taken(
    make_client: ClientFactory,
    time: FakeTime,
    metrics: Metrics,
    call: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A cut 200 is no profile: logged, retried, and the whole answer's profile returned."""
    caplog.set_level(logging.WARNING, logger="amperity_signal.amperity")
    script = Script(lambda: cut(200), whole_profile)
    client = make_client(script, clock=time.clock, sleep=time.sleep)

    if call == "lookup":
        profile = await client.lookup("email_sha256", "abc", deadline=None)
    else:
        profile = await client.get_profile("p-whole", deadline=None)

    assert len(script.requests) == 2
    assert profile is not None and (profile.profile_id, profile.attributes) == ("p-whole", {"A": 1})
    endpoint = "lookup" if call == "lookup" else "profile"
    (logged,) = [r.getMessage() for r in caplog.records if "body was cut off" in r.getMessage()]
    assert f"Amperity answered 200 to the {endpoint} request" in logged
    assert "so it is retried" in logged
    labels = {"integration": "acme-web", "endpoint": endpoint, "cause": "connection"}
    assert metrics.registry.get_sample_value("amperity_signal_amperity_retries_total", labels)


async def test_a_profile_whose_200_body_is_cut_every_time_is_unavailable_saying_so(
    make_client: ClientFactory, time: FakeTime
) -> None:
    """Retries run out on cut 200s: AMPERITY_UNAVAILABLE naming the cut body, no profile."""
    script = Script(lambda: cut(200))
    client = make_client(script, clock=time.clock, sleep=time.sleep)

    with pytest.raises(AmperityUnavailable) as caught:
        await client.get_profile("p-whole", deadline=None)

    assert len(script.requests) == 4  # max_retries = 3
    assert caught.value.reason == "AMPERITY_UNAVAILABLE"
    assert "the body of its 200 answer was cut off (connection reset by peer" in (
        caught.value.message
    )
    assert caught.value.metadata["cause"] == "connection"
    for secret in (INGEST_CANARY, PROFILE_CANARY):
        assert secret not in f"{caught.value} {caught.value!r} {caught.value.metadata}"


async def test_a_lookup_answered_404_whose_body_is_cut_is_no_match(
    make_client: ClientFactory, time: FakeTime
) -> None:
    """404 then a reset: nothing matches, as a whole 404 says; not retried."""
    script = Script(lambda: cut(404))
    client = make_client(script, clock=time.clock, sleep=time.sleep)

    assert await client.lookup("email_sha256", "abc", deadline=None) is None
    assert len(script.requests) == 1


async def test_a_stream_404_whose_body_is_cut_is_still_stream_not_found(
    make_client: ClientFactory, time: FakeTime
) -> None:
    """404 on the event POST then a reset: STREAM_NOT_FOUND, not a retried connection."""
    script = Script(lambda: cut(404))
    client = make_client(script, clock=time.clock, sleep=time.sleep)

    with pytest.raises(AmperityMisconfigured) as caught:
        await client.post_event({}, deadline=None)

    assert len(script.requests) == 1
    assert caught.value.reason == "STREAM_NOT_FOUND"
