"""Amperity's answers mapped to errors: the notes' status table, DNS, and no leaked tokens."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import grpc
import httpx
import pytest
from pydantic import SecretStr

from amperity_signal.amperity import AmperityClient, vendor_call
from amperity_signal.amperity.responses import Scrubber, parse_error_body
from amperity_signal.config import ContextMapping, IntegrationSettings
from amperity_signal.errors import (
    AmperityAuthError,
    AmperityError,
    AmperityMisconfigured,
    AmperityRejected,
    AmperityUnavailable,
)
from amperity_signal.metrics import Metrics
from amperity_signal.proxies import ProxyRules
from amperity_signal.service.status import code_for
from tests.support import base64_echoes, mint_keys, reveals_encoded
from tests.unit.amperity.faketime import FakeTime

ClientFactory = Callable[..., AmperityClient]
Call = Callable[[AmperityClient], Awaitable[Any]]


class Answer:
    """A MockTransport handler answering every request the same way, counting them."""

    def __init__(self, status: int, body: Any = None, headers: dict[str, str] | None = None):
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.count = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.count += 1
        return httpx.Response(self.status, json=self.body, headers=self.headers)


async def _event(client: AmperityClient) -> Any:
    return await client.post_event({"event": "purchase"}, deadline=None)


async def _lookup(client: AmperityClient) -> Any:
    return await client.lookup("email_sha256", "9f86d0", deadline=None)


async def _profile(client: AmperityClient) -> Any:
    return await client.get_profile("p-123", deadline=None)


CALLS: dict[str, Call] = {"events": _event, "lookup": _lookup, "profile": _profile}
PERMANENT = [
    ("events", 400, AmperityRejected, "AMPERITY_BAD_REQUEST"),
    ("events", 401, AmperityAuthError, "INGEST_KEY_REJECTED"),
    ("events", 403, AmperityAuthError, "INGEST_KEY_REJECTED"),
    ("events", 404, AmperityMisconfigured, "STREAM_NOT_FOUND"),
    ("events", 409, AmperityMisconfigured, "STREAM_REJECTING"),
    ("events", 411, AmperityRejected, "CONNECTOR_BUG"),
    ("events", 413, AmperityRejected, "PAYLOAD_TOO_LARGE"),
    ("events", 415, AmperityRejected, "CONNECTOR_BUG"),
    ("lookup", 400, AmperityRejected, "AMPERITY_BAD_REQUEST"),
    ("lookup", 401, AmperityAuthError, "PROFILE_KEY_INVALID"),
    ("lookup", 403, AmperityAuthError, "PROFILE_KEY_FORBIDDEN"),
    ("profile", 400, AmperityRejected, "AMPERITY_BAD_REQUEST"),
    ("profile", 401, AmperityAuthError, "PROFILE_KEY_INVALID"),
    ("profile", 403, AmperityAuthError, "PROFILE_KEY_FORBIDDEN"),
    ("profile", 409, AmperityRejected, "AMPERITY_UNEXPECTED_STATUS"),
]


@pytest.mark.parametrize(("endpoint", "status", "error_type", "reason"), PERMANENT)
async def test_permanent_status_maps_to_its_error_after_exactly_one_request(
    make_client: ClientFactory,
    endpoint: str,
    status: int,
    error_type: type[AmperityError],
    reason: str,
) -> None:
    """Each non-retryable status raises its error and reason, and is never retried."""
    answer = Answer(status, {"status": status, "message": "nope", "request_id": "req-1"})
    with pytest.raises(error_type) as caught:
        await CALLS[endpoint](make_client(answer))

    error = caught.value
    assert error.reason == reason
    assert answer.count == 1
    assert error.status_code == status
    call = vendor_call(error)
    assert call is not None
    assert (call.status_code, call.attempts) == (status, 1)
    assert error.metadata["request_id"] == "req-1"


@pytest.mark.parametrize(("endpoint", "status", "error_type"), [case[:3] for case in PERMANENT])
async def test_every_variable_of_a_rejection_is_in_its_metadata(
    make_client: ClientFactory,
    integration: IntegrationSettings,
    endpoint: str,
    status: int,
    error_type: type[AmperityError],
) -> None:
    """What the message names (Amperity's own words included) is in the ErrorInfo metadata."""
    said = "the tenant said no"
    with pytest.raises(error_type) as caught:
        await CALLS[endpoint](make_client(Answer(status, {"message": said})))

    error = caught.value
    variables = {
        "amperity_message": said,
        "status_code": str(status),
        "endpoint": endpoint,
        "tenant_id": integration.tenant_id,
        "event_stream_id": integration.event_stream_id,
    }
    named = {key: value for key, value in variables.items() if value in error.message}
    assert {key: error.metadata.get(key) for key in named} == named


@pytest.mark.parametrize("status", [411, 415])
async def test_a_request_amperity_finds_malformed_by_our_fault_is_internal(
    make_client: ClientFactory, status: int
) -> None:
    """411/415 say the bug is amperity-signal's, not the configuration's: INTERNAL, as bugs are."""
    with pytest.raises(AmperityRejected) as caught:
        await _event(make_client(Answer(status)))

    assert "not in your configuration" in caught.value.message
    assert code_for(caught.value) == grpc.StatusCode.INTERNAL


async def test_troubleshooting_advice_is_the_message(make_client: ClientFactory) -> None:
    """401 on ingest and 403 on the Profile API carry the spec's fix in their message."""
    with pytest.raises(AmperityAuthError) as ingest:
        await _event(make_client(Answer(401)))
    with pytest.raises(AmperityAuthError) as profile:
        await _lookup(make_client(Answer(403)))

    assert "Streaming Ingest Write Access" in ingest.value.message
    assert "Settings > Security > API Keys" in ingest.value.message
    assert "Profile Read Access" in profile.value.message
    assert "distinct tokens" in profile.value.message


async def test_a_lookup_400_says_the_keys_did_not_arrive_not_to_check_linking_keys(
    make_client: ClientFactory,
) -> None:
    """The notes: a lookup is 400 without keys; a key outside linking_keys is 404."""
    with pytest.raises(AmperityRejected) as caught:
        await _lookup(make_client(Answer(400, {"message": "no keys"})))

    message = caught.value.message
    assert message.startswith("Amperity rejected the lookup as malformed (400). Amperity said:")
    assert "400 to a keychain lookup that carries no keys" in message
    assert "linking_keys is a 404, not a 400" in message
    assert "outbound proxy" in message and "request_id" in message
    assert "personalisation_context_mappings" not in message
    assert "Check that linking_keys" not in message


@pytest.mark.parametrize("personalised", [False, True])
async def test_a_profile_400_names_what_a_profile_get_carries(
    make_client: ClientFactory, integration: IntegrationSettings, personalised: bool
) -> None:
    """A profile GET sends no linking key; its context parameters only when personalising."""
    if personalised:
        mapping = ContextMapping(source="properties.category", target="pageCategory")
        integration = integration.model_copy(
            update={"personalisation_enabled": True, "personalisation_context_mappings": (mapping,)}
        )
    with pytest.raises(AmperityRejected) as caught:
        await _profile(make_client(Answer(400), integration=integration))

    message = caught.value.message
    assert message.startswith("Amperity rejected the profile request as malformed (400).")
    assert "documents no 400 for a profile GET" in message
    assert "linking_keys" not in message
    assert ("personalisation_context_mappings target" in message) is personalised
    assert "api_base_url" in message


async def test_bad_request_carries_amperitys_message_and_ids(make_client: ClientFactory) -> None:
    """400 puts Amperity's message in ours and request_id/trace_id in the metadata."""
    body = {"status": 400, "message": "body is not an object", "request_id": "r", "trace_id": "t"}
    with pytest.raises(AmperityRejected) as caught:
        await _event(make_client(Answer(400, body)))

    assert "body is not an object" in caught.value.message
    assert caught.value.metadata["request_id"] == "r"
    assert caught.value.metadata["trace_id"] == "t"


async def test_amperitys_message_ends_its_sentence_before_our_advice(
    make_client: ClientFactory,
) -> None:
    """Amperity's message, unpunctuated, is closed with a period before the fix that follows."""
    body = {"status": 400, "message": "body is not an object"}
    with pytest.raises(AmperityRejected) as caught:
        await _event(make_client(Answer(400, body)))

    assert "Amperity said: body is not an object. The body must be" in caught.value.message


async def test_stream_not_found_names_stream_and_tenant(make_client: ClientFactory) -> None:
    """404 on ingest says which stream id and tenant to check."""
    with pytest.raises(AmperityMisconfigured) as caught:
        await _event(make_client(Answer(404)))

    assert "esm-abc123" in caught.value.message
    assert "acme-tenant" in caught.value.message
    assert "event_stream_id" in caught.value.message


@pytest.mark.parametrize(
    ("status", "reason"), [(429, "AMPERITY_THROTTLED"), (503, "AMPERITY_UNAVAILABLE")]
)
async def test_retries_running_out_raise_unavailable_with_retry_after(
    make_client: ClientFactory, status: int, reason: str
) -> None:
    """429/5xx after max_retries (3) retries: AmperityUnavailable after 4 requests."""
    time = FakeTime()
    answer = Answer(status)
    with pytest.raises(AmperityUnavailable) as caught:
        await _event(make_client(answer, clock=time.clock, sleep=time.sleep))

    assert caught.value.reason == reason
    assert answer.count == 4
    assert caught.value.attempts == 4
    assert caught.value.retry_after > 0
    assert len(time.sleeps) == 3
    # The message says the 3 retries (max_retries) ran out: that count is metadata too.
    assert "the 3 retries (max_retries) ran out" in caught.value.message
    assert caught.value.metadata["max_retries"] == "3"


async def test_throttling_names_amperitys_limit_and_the_configured_rate(
    make_client: ClientFactory, integration: IntegrationSettings
) -> None:
    """429s to the end: Amperity's own 500/s, and this integration's rate, not 500 for both."""
    time = FakeTime()
    slow = integration.model_copy(update={"rate_limit_per_second": 40})
    client = make_client(Answer(429), integration=slow, clock=time.clock, sleep=time.sleep)
    with pytest.raises(AmperityUnavailable) as caught:
        await _event(client)

    message = caught.value.message
    assert "Real-time API limit at Amperity (500 requests/s unless Amperity raised it" in message
    assert "this integration keeps to rate_limit_per_second = 40." in message
    assert caught.value.metadata["rate_limit_per_second"] == "40"


def _connect_error(request: httpx.Request, code: int, text: str) -> httpx.ConnectError:
    """A ConnectError caused by a resolver failure, chained as httpx chains it."""
    error = httpx.ConnectError(f"[Errno {code}] {text}", request=request)
    error.__cause__ = socket.gaierror(code, text)
    return error


def _dns_failure(request: httpx.Request) -> httpx.Response:
    raise _connect_error(request, socket.EAI_NONAME, "Name or service not known")


async def test_unknown_host_is_a_wrong_tenant_subdomain_and_not_retried(
    make_client: ClientFactory,
) -> None:
    """A DNS "no such host" raises TENANT_HOST_NOT_FOUND naming the host, after one try."""
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return _dns_failure(request)

    with pytest.raises(AmperityMisconfigured) as caught:
        await _event(make_client(handler))

    assert caught.value.reason == "TENANT_HOST_NOT_FOUND"
    assert "no such host acme.amperity.com" in caught.value.message
    assert "subdomain portion of your Amperity dashboard URL" in caught.value.message
    assert len(requests) == 1
    call = vendor_call(caught.value)
    assert call is not None
    assert call.status_code == 0


async def test_transient_dns_failure_is_retried(make_client: ClientFactory) -> None:
    """EAI_AGAIN (resolver hiccup) is a connection error: retried, then succeeds."""
    time = FakeTime()
    answers: list[httpx.Response | None] = [None, httpx.Response(202)]

    def handler(request: httpx.Request) -> httpx.Response:
        answer = answers.pop(0)
        if answer is None:
            raise _connect_error(request, socket.EAI_AGAIN, "Temporary failure in name resolution")
        return answer

    client = make_client(handler, clock=time.clock, sleep=time.sleep)
    result = await client.post_event({"a": 1}, deadline=None)

    assert result.call.attempts == 2


async def test_tokens_never_appear_in_errors_calls_or_logs(
    make_client: ClientFactory,
    canaries: tuple[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Across every failure, no error str/repr/metadata, VendorCall or log holds a token."""
    caplog.set_level(logging.DEBUG)
    ingest, profile = canaries
    echo = {"message": f"bad token {ingest} / {profile}", "request_id": profile}
    time = FakeTime()
    texts: list[str] = []
    handlers: list[Callable[[httpx.Request], httpx.Response]] = [
        Answer(status, echo) for status in (400, 401, 403, 404, 409, 411, 413, 429, 503)
    ]
    # A redirect echoing a key before the API path, which its suggested base URL keeps.
    echoed_path = f"https://acme.amperity.com/{ingest}/prof/events/esm-abc123"
    handlers.append(Answer(301, headers={"Location": echoed_path}))
    handlers.append(_dns_failure)
    for handler in handlers:
        client = make_client(handler, clock=time.clock, sleep=time.sleep)
        for call in CALLS.values():
            try:
                result = await call(client)
            except AmperityError as error:
                texts += [str(error), repr(error), error.message, repr(error.metadata)]
                texts += [repr(vendor_call(error)), str(error.__cause__)]
            else:
                texts.append(repr(result))
    texts.append(caplog.text)
    texts.append(repr(client))

    blob = "\n".join(texts)
    assert "Bearer [REDACTED]" in blob
    for secret in (ingest, profile, "CANARY-INGEST-7f3a9c", "CANARY-PROFILE-51be02"):
        assert secret not in blob


@pytest.mark.parametrize("offset", [400, 480, 497])
@pytest.mark.parametrize("shape", ["message", "request_id", "text"])
def test_a_token_across_the_message_cut_leaves_no_part_of_itself(
    integration: IntegrationSettings, canaries: tuple[str, str], offset: int, shape: str
) -> None:
    """A token across the 500-character cut of an echoed text is redacted, not halved.

    Cut first and the head of the token stayed in the message.
    """
    for secret in canaries:
        echoed = "x" * offset + secret + " and more"
        fields = {"status": 400, "message": "m", shape: echoed}
        content = echoed.encode() if shape == "text" else json.dumps(fields).encode()
        body = parse_error_body(content, Scrubber(integration))
        kept = "".join((body.message, body.request_id, body.trace_id))
        assert "[REDACTED]"[: 500 - offset] in kept
        assert secret[:3] not in kept  # the padding is x's: any "eyJ" is the token's head


async def test_every_request_is_counted_by_endpoint_and_status(
    make_client: ClientFactory, metrics: Metrics
) -> None:
    """partner_calls counts each request with its endpoint and status."""
    time = FakeTime()
    with pytest.raises(AmperityUnavailable):
        await _lookup(make_client(Answer(502), clock=time.clock, sleep=time.sleep))

    labels = {"integration": "acme-web", "endpoint": "lookup", "status": "502", "reason": ""}
    assert metrics.registry.get_sample_value("amperity_signal_amperity_calls_total", labels) == 4
    retried = {"integration": "acme-web", "endpoint": "lookup", "cause": "502"}
    assert metrics.registry.get_sample_value("amperity_signal_amperity_retries_total", retried) == 3


def _bad_gzip(status: int) -> httpx.Response:
    # As the aiohttp transport answers: the raw body as a stream, decoded when read.
    return httpx.Response(
        status, headers={"Content-Encoding": "gzip"}, stream=httpx.ByteStream(b"not gzip")
    )


async def test_accepted_event_with_an_undecodable_body_is_delivered_once(
    make_client: ClientFactory,
) -> None:
    """A 202 whose body its Content-Encoding cannot undo is still a delivered event."""
    requests: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return _bad_gzip(202)

    result = await make_client(answer).post_event({"event": "purchase"}, deadline=None)

    assert result.status_code == 202
    assert len(requests) == 1


async def test_profile_with_an_undecodable_body_is_a_bad_response_naming_the_encoding(
    make_client: ClientFactory,
) -> None:
    """A 200 lookup whose gzip body is broken raises AMPERITY_BAD_RESPONSE, not httpx's error."""
    with pytest.raises(AmperityUnavailable) as caught:
        await _lookup(make_client(lambda request: _bad_gzip(200)))

    assert caught.value.reason == "AMPERITY_BAD_RESPONSE"
    assert "'gzip' Content-Encoding" in caught.value.message
    assert vendor_call(caught.value) is not None


async def test_unknown_host_of_api_base_url_says_to_fix_api_base_url(
    make_client: ClientFactory, integration: IntegrationSettings
) -> None:
    """With api_base_url set, a DNS "no such host" names api_base_url, not tenant_subdomain."""
    proxied = integration.model_copy(update={"api_base_url": "https://amperity-proxy.corp.example"})

    with pytest.raises(AmperityMisconfigured) as caught:
        await _event(make_client(_dns_failure, integration=proxied))

    assert caught.value.reason == "TENANT_HOST_NOT_FOUND"
    assert "no such host amperity-proxy.corp.example" in caught.value.message
    assert "api_base_url" in caught.value.message
    assert "tenant_subdomain is wrong" not in caught.value.message
    assert "tenant_subdomain" not in caught.value.metadata
    # The URL the message offers instead is in the metadata, as every variable is.
    assert "remove api_base_url to reach https://acme.amperity.com." in caught.value.message
    assert caught.value.metadata["base_url_without_override"] == "https://acme.amperity.com"


async def test_exhausted_connection_failures_say_what_failed(
    make_client: ClientFactory,
) -> None:
    """A refused connection's description is in the message and metadata, not only "connection"."""

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(
            "Cannot connect to host acme.amperity.com:443 ssl:default "
            "[Connect call failed ('10.1.2.3', 443)]",
            request=request,
        )

    time = FakeTime()
    with pytest.raises(AmperityUnavailable) as caught:
        await _event(make_client(refuse, clock=time.clock, sleep=time.sleep))

    assert caught.value.reason == "AMPERITY_UNAVAILABLE"
    assert "Connect call failed ('10.1.2.3', 443)" in caught.value.message
    assert "Connect call failed" in caught.value.metadata["failure"]


@pytest.mark.parametrize(
    ("api_base_url", "on_this_machine"),
    [
        ("http://127.0.0.1:8765", True),
        ("http://localhost:8765", True),
        ("http://[::1]:8765", True),
        ("https://amperity-proxy.corp.example", False),
        (None, False),
    ],
)
async def test_no_answer_from_this_machine_asks_whether_the_sandbox_runs(
    api_base_url: str | None,
    on_this_machine: bool,
    make_client: ClientFactory,
    integration: IntegrationSettings,
) -> None:
    """A refused connection to a loopback api_base_url asks whether the sandbox is running.

    ``send-test-event`` with no sandbox up said only to check network egress to
    http://127.0.0.1:8765, as if this machine's own port were behind a firewall.
    """

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    pointed = integration.model_copy(update={"api_base_url": api_base_url})
    time = FakeTime()
    with pytest.raises(AmperityUnavailable) as caught:
        await _event(make_client(refuse, integration=pointed, clock=time.clock, sleep=time.sleep))

    asked = "is `amperity-signal sandbox` running there?"
    assert (asked in caught.value.message) is on_this_machine, caught.value.message
    assert "check network egress to" in caught.value.message  # still said: it may be a proxy


async def test_refused_tls_certificate_is_named_with_the_field_to_check(
    make_client: ClientFactory, integration: IntegrationSettings
) -> None:
    """A certificate that fails verification says so and names api_base_url, not "unavailable"."""
    refused = ssl.SSLCertVerificationError(
        1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate"
    )
    refused.verify_message = "self-signed certificate"

    def handshake(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Cannot connect to host", request=request) from refused

    proxied = integration.model_copy(update={"api_base_url": "https://amperity-proxy.corp.example"})
    time = FakeTime()
    with pytest.raises(AmperityUnavailable) as caught:
        await _event(
            make_client(handshake, integration=proxied, clock=time.clock, sleep=time.sleep)
        )

    message = caught.value.message
    assert "TLS certificate was refused (self-signed certificate)" in message
    assert "Check that api_base_url names Amperity's host" in message
    assert "temporarily unavailable" not in message


@pytest.mark.parametrize("endpoint", ["lookup", "profile"])
async def test_413_on_a_profile_call_names_the_profile_call_not_the_event_body(
    make_client: ClientFactory, endpoint: str
) -> None:
    """A 413 on a lookup or profile GET points at identifiers and context, not event fields."""
    with pytest.raises(AmperityRejected) as caught:
        await CALLS[endpoint](make_client(Answer(413)))

    message = caught.value.message
    assert caught.value.reason == "PAYLOAD_TOO_LARGE"
    assert f"the {endpoint} request as too large (413)" in message
    assert "linking_keys" in message
    assert "an event may be at most" not in message


async def test_redirect_names_its_target_and_the_api_base_url_that_reaches_it(
    make_client: ClientFactory, integration: IntegrationSettings
) -> None:
    """A 301 from http to https says where it points and which api_base_url to set; no retry."""
    plain = integration.model_copy(update={"api_base_url": "http://acme.amperity.com"})
    answer = Answer(301, headers={"Location": "https://acme.amperity.com/prof/events/esm-abc123"})

    with pytest.raises(AmperityRejected) as caught:
        await _event(make_client(answer, integration=plain))

    message = caught.value.message
    assert "redirecting to https://acme.amperity.com/prof/events/esm-abc123" in message
    assert "Set api_base_url = 'https://acme.amperity.com'" in message
    assert caught.value.metadata["location"] == "https://acme.amperity.com/prof/events/esm-abc123"
    # Every variable of the message is in the metadata (AIP-193).
    assert caught.value.metadata["suggested_base_url"] == "https://acme.amperity.com"
    assert answer.count == 1


async def test_a_suggested_base_url_echoing_a_token_is_redacted_and_cut(
    make_client: ClientFactory, integration: IntegrationSettings, canaries: tuple[str, str]
) -> None:
    """The suggestion is cut from the redirect's target: scrubbed and cut as the target is.

    A Location echoing the key before the API path put the key, whole, in the message and
    in the metadata's ``suggested_base_url``, however long the target.
    """
    ingest, _ = canaries
    padding = "p" * 2000
    target = f"https://acme.amperity.com/{ingest}/{padding}/prof/events/esm-abc123"

    with pytest.raises(AmperityRejected) as caught:
        await _event(
            make_client(Answer(301, headers={"Location": target}), integration=integration)
        )

    suggested = caught.value.metadata["suggested_base_url"]
    assert suggested.startswith("https://acme.amperity.com/[REDACTED]/ppp")
    assert len(suggested) == 500
    assert f"Set api_base_url = {suggested!r}." in caught.value.message
    assert ingest not in caught.value.message
    assert ingest not in repr(caught.value.metadata)


async def test_redirect_to_another_page_says_the_base_url_is_not_the_api(
    make_client: ClientFactory,
) -> None:
    """A redirect to a login page names it and points at tenant_subdomain, suggesting no URL."""
    answer = Answer(302, headers={"Location": "/login?next=%2F"})

    with pytest.raises(AmperityRejected) as caught:
        await _profile(make_client(answer))

    message = caught.value.message
    assert "redirecting to https://acme.amperity.com/login?next=%2F" in message
    assert "check that tenant_subdomain points at Amperity's Real-time API" in message
    assert "Set api_base_url" not in message


def _jwt_expired_in_2020() -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    claims = {"tenant": "acme", "exp": 1_577_836_800}  # 2020-01-01 00:00 UTC
    return f"{part({'alg': 'HS256'})}.{part(claims)}.CANARY-EXPIRED-9d1e"


@pytest.mark.parametrize(
    ("endpoint", "field", "access"),
    [
        ("events", "api_key", "Streaming Ingest Write Access"),
        ("lookup", "profile_api_key", "Profile Read Access"),
    ],
)
async def test_401_with_a_key_past_its_exp_claim_says_when_it_expired(
    make_client: ClientFactory,
    integration: IntegrationSettings,
    endpoint: str,
    field: str,
    access: str,
) -> None:
    """A 401 for a JWT whose exp has passed names the key and date, not tenant or scope."""
    expired = integration.model_copy(update={field: SecretStr(_jwt_expired_in_2020())})

    with pytest.raises(AmperityAuthError) as caught:
        await CALLS[endpoint](make_client(Answer(401), integration=expired))

    message = caught.value.message
    assert f"({field}) expired on 2020-01-01 00:00 UTC (its exp claim)" in message
    assert f"with {access} and update {field}" in message
    assert "check tenant_id" not in message
    assert "CANARY-EXPIRED" not in message


@pytest.mark.parametrize("endpoint", ["events", "lookup"])
async def test_a_401_naming_when_the_key_expired_has_the_date_in_its_metadata(
    make_client: ClientFactory, integration: IntegrationSettings, endpoint: str
) -> None:
    """The expiry the message names is in the ErrorInfo metadata too, in RFC 3339."""
    field = "api_key" if endpoint == "events" else "profile_api_key"
    expired = integration.model_copy(update={field: SecretStr(_jwt_expired_in_2020())})

    with pytest.raises(AmperityAuthError) as caught:
        await CALLS[endpoint](make_client(Answer(401), integration=expired))

    assert caught.value.metadata["key_expired_at"] == "2020-01-01T00:00:00Z"
    assert "CANARY-EXPIRED" not in repr(caught.value.metadata)


async def test_a_request_its_caller_cancels_is_counted_without_an_answer(
    make_client: ClientFactory, metrics: Metrics
) -> None:
    """A request in flight when its caller is cancelled counts in partner_calls as status 0.

    Its reason says the caller gave up: not a failure of Amperity's or of the network.
    """
    sent = asyncio.Event()

    async def hang(request: httpx.Request) -> httpx.Response:
        sent.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    lookup = asyncio.ensure_future(_lookup(make_client(hang)))
    await sent.wait()
    lookup.cancel()
    with pytest.raises(asyncio.CancelledError):
        await lookup
    labels = {"integration": "acme-web", "endpoint": "lookup", "status": "0", "reason": "CANCELLED"}
    assert metrics.registry.get_sample_value("amperity_signal_amperity_calls_total", labels) == 1
    assert (
        metrics.registry.get_sample_value(
            "amperity_signal_amperity_call_seconds_count", {"endpoint": "lookup"}
        )
        == 1
    )


def _partial_echoes(token: str) -> list[tuple[int, Any, dict[str, str]]]:
    """Answers echoing part of ``token``: one segment, a cut head, the tail, in each field."""
    _, payload, signature = token.split(".")
    return [
        (401, {"message": f"bad token payload {payload}", "request_id": signature}, {}),
        (403, {"message": f"token {token[:120]}... rejected", "trace_id": token[-12:]}, {}),
        (400, {"message": f"stream not found for Bearer%20{token[:200]}"}, {}),
        (302, None, {"Location": f"https://other.example/{payload}?sig={signature}"}),
        (301, None, {"Location": f"https://acme.amperity.com/{payload[:40]}/v0/events"}),
    ]


async def test_a_partial_echo_of_a_key_leaves_no_part_of_it(
    make_client: ClientFactory, integration: IntegrationSettings
) -> None:
    """A key's payload or signature alone, a cut head or its tail, echoed back, is redacted.

    Only the whole token was replaced: a segment or a cut head echoed by Amperity (or a
    proxy before it) reached the error's message, its metadata and the log line.
    """
    keys = mint_keys()
    keyed = integration.model_copy(
        update={"api_key": SecretStr(keys.ingest), "profile_api_key": SecretStr(keys.profile)}
    )
    texts = []
    for token in (keys.ingest, keys.profile):
        for status, body, headers in _partial_echoes(token):
            client = make_client(Answer(status, body, headers), integration=keyed)
            for call in CALLS.values():
                with pytest.raises(AmperityError) as caught:
                    await call(client)
                texts += [str(caught.value), repr(caught.value.metadata)]
    blob = "\n".join(texts)
    assert "[REDACTED]" in blob
    for token in (keys.ingest, keys.profile):
        for segment in token.split(".")[1:]:
            pieces = {segment[i : i + 12] for i in range(len(segment) - 11)}
            assert [piece for piece in pieces if piece in blob] == []


async def test_a_key_echoed_base64_encoded_leaves_no_part_of_it(
    make_client: ClientFactory,
    integration: IntegrationSettings,
    canaries: tuple[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A key echoed base64-encoded (a proxy quoting the Basic header it got) is redacted.

    Only the key as written was replaced: its encoded forms, standard or URL-safe, at any
    byte alignment, reached the error's message, its metadata and the log line.
    """
    caplog.set_level(logging.DEBUG)
    texts = []
    for key in canaries:
        for echo in base64_echoes(key):
            body = {"message": f"bad Authorization: Basic {echo}", "request_id": echo}
            client = make_client(Answer(401, body), integration=integration)
            with pytest.raises(AmperityError) as caught:
                await _event(client)
            texts += [str(caught.value), repr(caught.value.metadata)]
    blob = "\n".join([*texts, caplog.text])
    assert "Basic [REDACTED]" in blob
    for key in canaries:
        assert not reveals_encoded(blob, key)


async def test_a_proxy_quoting_its_proxy_authorization_leaves_no_credential_in_errors(
    make_client: ClientFactory, integration: IntegrationSettings
) -> None:
    """A proxy's answer quoting the Proxy-Authorization it got does not carry it on.

    Only the integration's keys were scrubbed from answers: a proxy in front of an http
    base URL answering 400/401/403 or a redirect with the request's headers put
    ``Basic base64(user:password)`` in the error's message and metadata, to the caller.
    """
    password = "proxy-Canary-Pass-0123"
    statuses = [400, 401, 403, 302]
    seen: list[str] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        length = re.search(r"(?i)content-length: *(\d+)", head)
        await reader.readexactly(int(length[1]) if length else 0)
        echo = head.replace("\r\n", " | ")
        seen.append(echo)
        status = statuses[(len(seen) - 1) % len(statuses)]
        body = json.dumps({"message": f"you sent {echo}", "request_id": echo[-80:]}).encode()
        where = f"Location: http://amperity.test/{quote(echo)}\r\n" if status == 302 else ""
        writer.write(
            f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n{where}"
            "Connection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    rules = ProxyRules.from_environ({"HTTP_PROXY": f"http://agent:{password}@127.0.0.1:{port}"})
    plain = integration.model_copy(
        update={"api_base_url": "http://amperity.test", "max_retries": 0}
    )
    texts = []
    async with server:
        for _ in statuses:
            client = make_client(integration=plain, proxies=rules)
            with pytest.raises(AmperityError) as caught:
                await _event(client)
            texts += [str(caught.value), repr(caught.value.metadata)]
    blob = "\n".join(texts)
    assert all("Proxy-Authorization: Basic " in echo for echo in seen)  # it was sent, and quoted
    assert "Proxy-Authorization: Basic [REDACTED]" in blob
    assert password not in blob and not reveals_encoded(blob, password)
