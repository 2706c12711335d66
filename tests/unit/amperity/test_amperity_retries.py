"""Retries: full-jitter backoff, Retry-After, max_retries, and the caller's deadline."""

from __future__ import annotations

import random
import time as local_time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from amperity_signal.amperity import AmperityClient, MemoryRateLimiter, vendor_call
from amperity_signal.amperity.aiohttp_transport import TunnelRefused
from amperity_signal.config import IntegrationSettings
from amperity_signal.errors import AmperityError, AmperityMisconfigured, AmperityUnavailable
from amperity_signal.metrics import Metrics
from amperity_signal.proxies import ProxyRules
from amperity_signal.service.status import to_status_proto
from tests.unit.amperity.faketime import FakeTime

ClientFactory = Callable[..., AmperityClient]


class Script:
    """A MockTransport handler answering from a script (responses or exceptions)."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


class HighestJitter(random.Random):
    """Always picks the top of the jitter range, so backoff is deterministic."""

    def uniform(self, a: float, b: float) -> float:
        return b


@pytest.fixture
def time() -> FakeTime:
    """The fake clock and recorded sleeps."""
    return FakeTime()


async def test_503_then_202_succeeds_on_the_second_attempt(
    make_client: ClientFactory, time: FakeTime
) -> None:
    """A 503 is retried once after a jittered backoff under 0.1 s; the call reports 2 attempts."""
    script = Script(httpx.Response(503), httpx.Response(202))
    client = make_client(script, clock=time.clock, sleep=time.sleep)
    result = await client.post_event({"a": 1}, deadline=None)

    assert result.call.attempts == 2
    assert result.call.status_code == 202
    assert len(time.sleeps) == 1
    assert 0 <= time.sleeps[0] <= 0.1
    assert result.call.duration == pytest.approx(time.sleeps[0])


@pytest.mark.parametrize("status", [507, 520, 599])
async def test_every_5xx_is_temporary(
    make_client: ClientFactory, time: FakeTime, status: int
) -> None:
    """Any 5xx is retried (a proxy's 520 too), not only 500/502/503/504."""
    script = Script(httpx.Response(status), httpx.Response(202))
    client = make_client(script, clock=time.clock, sleep=time.sleep)
    result = await client.post_event({"a": 1}, deadline=None)
    assert result.call.attempts == 2


async def test_408_is_retried(make_client: ClientFactory, time: FakeTime) -> None:
    """408 Request Timeout (nothing was processed) is retried, not reported as a rejection."""
    script = Script(httpx.Response(408), httpx.Response(202))
    client = make_client(script, clock=time.clock, sleep=time.sleep)
    result = await client.post_event({"a": 1}, deadline=None)
    assert (result.call.attempts, result.call.status_code) == (2, 202)
    assert len(script.requests) == 2


@pytest.mark.parametrize("status", [501, 505])
async def test_the_two_5xx_a_retry_cannot_change_are_permanent(
    make_client: ClientFactory, time: FakeTime, status: int
) -> None:
    """501 Not Implemented and 505 HTTP Version Not Supported fail after one request."""
    script = Script(httpx.Response(status), httpx.Response(202))
    client = make_client(script, clock=time.clock, sleep=time.sleep)
    with pytest.raises(AmperityError, match="unexpected") as raised:
        await client.post_event({"a": 1}, deadline=None)
    assert (raised.value.reason, raised.value.attempts) == ("AMPERITY_UNEXPECTED_STATUS", 1)
    assert len(script.requests) == 1


async def test_backoff_is_full_jitter_doubling_from_01_capped_at_5(
    make_client: ClientFactory, time: FakeTime, integration: IntegrationSettings
) -> None:
    """Each sleep lies in [0, min(5, 0.1 * 2**retry)] and the ceiling reaches the 5 s cap."""
    patient = integration.model_copy(update={"max_retries": 10})
    client = make_client(
        Script(httpx.Response(500)),
        integration=patient,
        clock=time.clock,
        sleep=time.sleep,
        rng=HighestJitter(),
    )
    with pytest.raises(AmperityUnavailable):
        await client.post_event({"a": 1}, deadline=None)

    assert time.sleeps == pytest.approx([min(5.0, 0.1 * 2**retry) for retry in range(10)])


async def test_jittered_sleeps_stay_within_their_ceilings(
    make_client: ClientFactory, time: FakeTime, integration: IntegrationSettings
) -> None:
    """With real randomness, every sleep is between 0 and its retry's ceiling."""
    patient = integration.model_copy(update={"max_retries": 12})
    client = make_client(
        Script(httpx.Response(504)), integration=patient, clock=time.clock, sleep=time.sleep
    )
    with pytest.raises(AmperityUnavailable):
        await client.post_event({"a": 1}, deadline=None)

    for retry, slept in enumerate(time.sleeps):
        assert 0 <= slept <= min(5.0, 0.1 * 2**retry)


async def test_retry_after_seconds_is_honoured(make_client: ClientFactory, time: FakeTime) -> None:
    """429 with Retry-After: 2 waits exactly 2 s before the next attempt."""
    script = Script(httpx.Response(429, headers={"Retry-After": "2"}), httpx.Response(202))
    await make_client(script, clock=time.clock, sleep=time.sleep).post_event({}, deadline=None)

    assert time.sleeps == [2.0]


async def test_retry_after_http_date_is_honoured(
    make_client: ClientFactory, time: FakeTime
) -> None:
    """Retry-After as an HTTP date is measured from the response's Date header."""
    sent = datetime(2026, 4, 17, 15, 0, 0, tzinfo=UTC)
    headers = {
        "Date": format_datetime(sent, usegmt=True),
        "Retry-After": format_datetime(sent + timedelta(seconds=3), usegmt=True),
    }
    script = Script(httpx.Response(503, headers=headers), httpx.Response(202))
    await make_client(script, clock=time.clock, sleep=time.sleep).post_event({}, deadline=None)

    assert time.sleeps == [3.0]


async def test_deadline_shorter_than_retry_after_gives_up_at_once(
    make_client: ClientFactory, time: FakeTime
) -> None:
    """When the next wait would cross the deadline: no sleep, AmperityUnavailable, retry_after."""
    script = Script(httpx.Response(429, headers={"Retry-After": "5"}))
    client = make_client(script, clock=time.clock, sleep=time.sleep)
    with pytest.raises(AmperityUnavailable) as caught:
        await client.post_event({}, deadline=time.now + 1.0)

    assert caught.value.reason == "AMPERITY_THROTTLED"
    assert caught.value.retry_after == 5.0
    assert time.sleeps == []
    assert len(script.requests) == 1
    assert "deadline" in caught.value.message


async def test_deadline_shorter_than_backoff_gives_up_without_sleeping_past_it(
    make_client: ClientFactory, time: FakeTime
) -> None:
    """Backoff that would end after the deadline is never slept; the error comes at once."""
    script = Script(httpx.Response(503))
    client = make_client(script, clock=time.clock, sleep=time.sleep, rng=HighestJitter())
    start = time.now
    deadline = start + 0.25  # room for 0.1 + 0.2 would cross it at the second retry
    with pytest.raises(AmperityUnavailable) as caught:
        await client.post_event({}, deadline=deadline)

    assert time.sleeps == pytest.approx([0.1])
    assert time.now <= deadline
    assert caught.value.retry_after == pytest.approx(0.2)
    assert len(script.requests) == 2


async def test_connection_errors_and_timeouts_are_retried(
    make_client: ClientFactory, time: FakeTime, metrics: Metrics
) -> None:
    """ConnectError and ReadTimeout are retried and counted by cause."""
    script = Script(
        httpx.ConnectError("connection refused"),
        httpx.ReadTimeout("slow"),
        httpx.Response(202),
    )
    result = await make_client(script, clock=time.clock, sleep=time.sleep).post_event(
        {}, deadline=None
    )

    assert result.call.attempts == 3
    for cause in ("connection", "timeout"):
        labels = {"integration": "acme-web", "endpoint": "events", "cause": cause}
        assert metrics.registry.get_sample_value("amperity_signal_amperity_retries_total", labels)


async def test_connection_failures_exhausted_are_unavailable_with_status_zero(
    make_client: ClientFactory, time: FakeTime
) -> None:
    """When Amperity never answers, the error says unavailable and the call shows status 0."""
    script = Script(httpx.ConnectError("connection reset"))
    with pytest.raises(AmperityUnavailable) as caught:
        await make_client(script, clock=time.clock, sleep=time.sleep).lookup(
            "k", "v", deadline=None
        )

    assert caught.value.reason == "AMPERITY_UNAVAILABLE"
    call = vendor_call(caught.value)
    assert call is not None
    assert (call.status_code, call.attempts) == (0, 4)


async def test_no_retries_when_max_retries_is_zero(
    make_client: ClientFactory, time: FakeTime, integration: IntegrationSettings
) -> None:
    """max_retries = 0 makes exactly one request."""
    script = Script(httpx.Response(503))
    eager = integration.model_copy(update={"max_retries": 0})
    client = make_client(script, integration=eager, clock=time.clock, sleep=time.sleep)
    with pytest.raises(AmperityUnavailable):
        await client.post_event({}, deadline=None)

    assert len(script.requests) == 1
    assert time.sleeps == []


async def test_each_attempt_times_out_at_the_time_left(
    make_client: ClientFactory, time: FakeTime
) -> None:
    """The attempt timeout is min(request_timeout, time left before the deadline)."""
    script = Script(httpx.Response(202))
    client = make_client(script, clock=time.clock, sleep=time.sleep)
    await client.post_event({}, deadline=time.now + 2.0)
    await client.post_event({}, deadline=None)

    short, full = (request.extensions["timeout"] for request in script.requests)
    assert short["read"] == pytest.approx(2.0)
    assert full["read"] == pytest.approx(10.0)


async def test_a_deadline_already_past_sends_nothing(
    make_client: ClientFactory, time: FakeTime
) -> None:
    """A call whose deadline has passed raises AmperityUnavailable without a request."""
    script = Script(httpx.Response(202))
    client = make_client(script, clock=time.clock, sleep=time.sleep)
    with pytest.raises(AmperityUnavailable) as caught:
        await client.post_event({}, deadline=time.now - 0.1)

    assert script.requests == []
    assert caught.value.attempts == 0


async def test_rate_limiter_waits_are_counted(
    make_client: ClientFactory, time: FakeTime, metrics: Metrics, integration: IntegrationSettings
) -> None:
    """A call that waited for the per-tenant limit increments rate_limiter_waits."""
    slow_tenant = integration.model_copy(update={"rate_limit_per_second": 1})
    limiter = MemoryRateLimiter(clock=time.clock, sleep=time.sleep)
    client = make_client(
        Script(httpx.Response(202)),
        integration=slow_tenant,
        limiter=limiter,
        clock=time.clock,
        sleep=time.sleep,
    )
    await client.post_event({}, deadline=None)
    await client.post_event({}, deadline=None)

    assert time.sleeps == [1.0]
    waits = metrics.registry.get_sample_value(
        "amperity_signal_rate_limiter_waits_total", {"integration": "acme-web"}
    )
    assert waits == 1


async def test_local_rate_limit_refusal_carries_the_unsent_call(
    make_client: ClientFactory, time: FakeTime, integration: IntegrationSettings
) -> None:
    """RATE_LIMITED_LOCALLY from the client carries a VendorCall with 0 attempts, status 0."""
    slow_tenant = integration.model_copy(update={"rate_limit_per_second": 1})
    script = Script(httpx.Response(202))
    client = make_client(script, integration=slow_tenant, clock=time.clock, sleep=time.sleep)
    await client.post_event({}, deadline=None)
    with pytest.raises(AmperityUnavailable) as caught:
        await client.post_event({}, deadline=time.now + 0.5)

    assert caught.value.reason == "RATE_LIMITED_LOCALLY"
    call = vendor_call(caught.value)
    assert call is not None
    assert (call.attempts, call.status_code) == (0, 0)
    assert len(script.requests) == 1


@pytest.mark.parametrize("retry_after", ["inf", "Infinity", "1e400", "nan", "-5"])
async def test_unreadable_retry_after_falls_back_to_backoff(
    make_client: ClientFactory, time: FakeTime, retry_after: str
) -> None:
    """A Retry-After that is not delay-seconds or an HTTP date is ignored: backoff applies."""
    script = Script(httpx.Response(429, headers={"Retry-After": retry_after}), httpx.Response(202))
    client = make_client(script, clock=time.clock, sleep=time.sleep, rng=HighestJitter())
    result = await client.post_event({}, deadline=None)

    assert result.call.attempts == 2
    assert time.sleeps == pytest.approx([0.1])


@pytest.mark.parametrize("retry_after", ["99999999999999999999", "Fri, 31 Dec 9999 23:59:59 GMT"])
async def test_retry_after_beyond_a_day_is_cut_to_a_day_and_fits_a_grpc_retry_info(
    make_client: ClientFactory, time: FakeTime, retry_after: str
) -> None:
    """A Retry-After of years is handed back as one day, which a RetryInfo can carry."""
    script = Script(httpx.Response(503, headers={"Retry-After": retry_after}))
    client = make_client(script, clock=time.clock, sleep=time.sleep)
    with pytest.raises(AmperityUnavailable) as caught:
        await client.post_event({}, deadline=None)

    assert caught.value.retry_after == 86_400.0
    assert time.sleeps == []
    assert "86400s" in caught.value.message
    to_status_proto(caught.value)  # raised ValueError/OverflowError for larger delays


@pytest.fixture
def pacific_local_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's local time zone is eight hours behind UTC for the test."""
    monkeypatch.setenv("TZ", "America/Los_Angeles")
    local_time.tzset()
    yield
    monkeypatch.undo()
    local_time.tzset()


@pytest.mark.usefixtures("pacific_local_time")
async def test_retry_after_asctime_date_is_gmt_whatever_the_local_time_zone(
    make_client: ClientFactory, time: FakeTime
) -> None:
    """An asctime-form Retry-After (no zone, as HTTP allows) is read as GMT, not local time."""
    sent = datetime(2026, 4, 17, 15, 0, 0, tzinfo=UTC)
    headers = {
        "Date": format_datetime(sent, usegmt=True),
        "Retry-After": (sent + timedelta(seconds=3)).strftime("%a %b %d %H:%M:%S %Y"),
    }
    script = Script(httpx.Response(503, headers=headers), httpx.Response(202))
    await make_client(script, clock=time.clock, sleep=time.sleep).post_event({}, deadline=None)

    assert time.sleeps == [3.0]


def refused_tunnel(status: int) -> TunnelRefused:
    """The transport's error for a proxy that answered the CONNECT ``status``."""
    proxy = ProxyRules.from_environ(
        {"HTTPS_PROXY": "http://signal:pr0xy-s3cret-7f3a9c@proxy.corp:3128"}
    ).proxy_for("https", "acme.amperity.com", None)
    assert proxy is not None
    request = httpx.Request("POST", "https://acme.amperity.com/prof/events/x")
    return TunnelRefused(
        request=request,
        status=status,
        phrase="Go away",
        target="acme.amperity.com:443",
        proxy=proxy,
    )


async def test_a_tunnel_the_proxy_refuses_is_permanent_and_names_the_fix(
    make_client: ClientFactory, time: FakeTime
) -> None:
    """TunnelRefused (4xx to CONNECT): PROXY_REFUSED on the first attempt, nothing retried."""
    script = Script(refused_tunnel(403), httpx.Response(202))
    client = make_client(script, clock=time.clock, sleep=time.sleep)

    with pytest.raises(AmperityMisconfigured) as caught:
        await client.post_event({"a": 1}, deadline=None)

    error = caught.value
    assert len(script.requests) == 1
    assert time.sleeps == []
    assert error.reason == "PROXY_REFUSED"
    assert error.metadata["proxy_status"] == "403"
    assert error.metadata["target"] == "acme.amperity.com:443"
    assert "(403 Forbidden)" in str(error)
    assert "Go away" not in str(error)  # the proxy's own words stay out
    assert "http://[REDACTED]@proxy.corp:3128 (HTTPS_PROXY)" in str(error)
    assert "add acme.amperity.com to NO_PROXY" in str(error)
    assert "pr0xy-s3cret-7f3a9c" not in f"{error} {error.metadata}"
    assert to_status_proto(error).code == 9  # FAILED_PRECONDITION


async def test_a_tunnel_the_proxy_could_not_open_is_retried(
    make_client: ClientFactory, time: FakeTime
) -> None:
    """A plain httpx.ProxyError (a 502 to CONNECT) is a connection failure: retried."""
    request = httpx.Request("POST", "https://acme.amperity.com/prof/events/x")
    failed = httpx.ProxyError("the proxy refused the tunnel: 502 Bad Gateway", request=request)
    script = Script(failed, httpx.Response(202))
    client = make_client(script, clock=time.clock, sleep=time.sleep)

    result = await client.post_event({"a": 1}, deadline=None)

    assert result.call.attempts == 2
