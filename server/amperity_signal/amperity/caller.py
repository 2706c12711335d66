"""Sending one logical Amperity call: rate limit, pool, timeouts, retries, metrics.

Retries use full-jitter exponential backoff (``Backoff``) on 408, 429, 5xx (not 501, 505) and
transport failures, honour ``Retry-After``, stop at ``max_retries`` and never sleep past
the caller's deadline. Everything else is final: a response or a mapped error.

Once a status line has arrived, the status decides, whatever then happens to the body:
a body cut off (a reset, a timeout) leaves the response without one, marked ``CUT_BODY``.
An event POST answered 2xx was accepted by Amperity (the API notes), so it is never sent
again; only a call whose answer *is* its body (``VendorRequest.body_required``: a
profile) retries a 2xx whose body was cut, as it retries a lost connection.

An answer's body is read up to ``MAX_ANSWER_BYTES`` and no further: one whose
Content-Length says more is not read at all, one without it stops being read past the
cap. A body with a Content-Encoding (we ask for none: a proxy's doing) is decoded here,
in bounded steps, and stops being decoded past the cap too, however small it came: 16 KB
of gzip can decode to 16 MiB. Any of these is left without a body, marked ``OVERSIZED``
(and its connection closed); again the status decides: a 202 is delivered, a 503
retried, and a profile 200 is no profile (``client.py``), not retried, as the same
answer would come again.

A call keeps its ``CallProgress`` (``progress.py``) up to date, so that a caller that
cancels it can tell whether its request had left.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

import httpx

from amperity_signal.amperity import endpoints, responses
from amperity_signal.amperity.aiohttp_transport import TunnelRefused
from amperity_signal.amperity.decoding import Decoding, Undecodable
from amperity_signal.amperity.models import VendorCall
from amperity_signal.amperity.pool import ShardedPool
from amperity_signal.amperity.progress import PROGRESS, CallProgress, Stage
from amperity_signal.amperity.ratelimit import Clock, RateLimiter, Sleep
from amperity_signal.amperity.retry import (
    RETRYABLE_STATUSES,
    Backoff,
    certificate_problem,
    is_unknown_host,
    no_answer_reason,
    parse_retry_after,
)
from amperity_signal.config import IntegrationSettings
from amperity_signal.errors import AmperityError
from amperity_signal.metrics import NO_REASON, Increments, Metrics, Observes
from amperity_signal.tenant_hosts import is_amperity_host

log = logging.getLogger(__name__)

# Without a deadline, a Retry-After longer than this is handed back to the caller
# (as retry_after) rather than holding the request open.
MAX_RETRY_AFTER_WITHOUT_DEADLINE = 60.0


def limiter_key(integration: IntegrationSettings) -> str:
    """The rate limiter's key: Amperity's limit is per tenant, for every call and host.

    Ingest and profile calls share it, and so do integrations reaching one tenant through
    its subdomain and through ``app.amperity.com``. Any other base URL (the sandbox, a
    proxy) is a tenant space of its own, so its URL is part of the key.
    """
    base_url = integration.base_url
    if is_amperity_host(httpx.URL(base_url).host):
        return integration.tenant_id
    return f"{integration.tenant_id}@{base_url}"


@dataclass(frozen=True, slots=True)
class CallHeaders:
    """A call's headers, encoded and redacted once per integration rather than per request.

    Attributes:
        wire: The headers as httpx encodes them, in order (``Host`` and ``Content-Length``
            are added per request, where httpx adds them).
        shown: The same headers with Authorization redacted, for ``VendorCall`` records.
    """

    # Holds the bearer token: kept out of repr so tracebacks and logs never show it.
    wire: tuple[tuple[bytes, bytes], ...] = field(repr=False)
    shown: tuple[tuple[str, str], ...]


def call_headers(headers: Mapping[str, str]) -> CallHeaders:
    """Encode ``headers`` as httpx would (ASCII) and keep a redacted copy to show."""
    return CallHeaders(
        wire=tuple(httpx.Headers(headers).raw),
        shown=tuple(endpoints.redacted(headers).items()),
    )


@dataclass(frozen=True)
class VendorRequest:
    """One logical call: what to send, where, and what answers end it.

    Attributes:
        body_required: A 2xx is only usable with its whole body (a profile): one whose body
            was cut off is retried like a lost connection. Without it (an event POST) the
            status line is the answer, and a cut body changes nothing.
    """

    endpoint: str
    method: str
    url: httpx.URL
    headers: CallHeaders
    content: bytes | None
    final_statuses: frozenset[int]
    body_required: bool = False


@dataclass(frozen=True, slots=True)
class CutBody:
    """What cut off the body of an answer whose status line had arrived.

    Attributes:
        cause: ``timeout`` or ``connection`` (the ``retries`` metric's cause for a retry).
        failure: What happened, safe to show (tokens scrubbed), e.g. "the read timed out".
    """

    cause: str
    failure: str


CUT_BODY = "amperity_signal.cut_body"
"""The response extension holding the ``CutBody`` of an answer whose body was cut off."""


MAX_ANSWER_BYTES = 1 << 20
"""The most of an answer's body that is read: 1 MiB. Amperity's answers are small: a 202
with an empty or short body, an error body of a few hundred bytes, a profile of a few
hundred attributes tens of KB (its requests are capped at 64 KB). A body past this is a
misbehaving server or proxy, and is never read into memory (nor cached as a profile)."""


@dataclass(frozen=True, slots=True)
class OversizedBody:
    """An answer's body over ``MAX_ANSWER_BYTES``, left unread.

    Attributes:
        size: Its Content-Length (``declared``), else the bytes read, or decoded when
            ``encoding`` is set, when reading stopped.
        declared: Whether ``size`` is the Content-Length, so that none of it was read.
        encoding: The Content-Encoding whose decoding passed the cap ("" for bytes read).
    """

    size: int
    declared: bool
    encoding: str = ""

    def __str__(self) -> str:
        if self.declared:
            return f"Content-Length {self.size:,} bytes, over the {MAX_ANSWER_BYTES:,}-byte cap"
        if self.encoding:
            return (
                f"its {self.encoding!r} Content-Encoding decodes past the "
                f"{MAX_ANSWER_BYTES:,}-byte cap: decoding stopped at {self.size:,} bytes"
            )
        return (
            f"no Content-Length, and reading stopped past the {MAX_ANSWER_BYTES:,}-byte cap, "
            f"at {self.size:,} bytes"
        )


OVERSIZED = "amperity_signal.oversized_body"
"""The response extension holding the ``OversizedBody`` of an answer whose body was too large."""


class _TooLarge(Exception):
    """Raised while reading a body, to stop once it is known to be over the cap."""

    def __init__(self, body: OversizedBody) -> None:
        super().__init__(str(body))
        self.body = body


class _Capped(httpx.AsyncByteStream):
    """``stream`` decoded, failing with ``_TooLarge`` once it passes ``MAX_ANSWER_BYTES``.

    Both the bytes read and the bytes they decode to are capped, the latter counted in
    ``Decoding``'s bounded steps: at most one step past the cap is ever held.
    """

    __slots__ = ("_decoding", "_stream")

    def __init__(self, stream: httpx.AsyncByteStream, decoding: Decoding) -> None:
        self._stream = stream
        self._decoding = decoding

    async def __aiter__(self) -> AsyncIterator[bytes]:
        decoded = 0
        async for piece in self._decoded():
            decoded += len(piece)
            if decoded > MAX_ANSWER_BYTES:
                raise _TooLarge(
                    OversizedBody(decoded, declared=False, encoding=self._decoding.encoding)
                )
            yield piece

    async def _decoded(self) -> AsyncIterator[bytes]:
        read = 0
        async for chunk in self._stream:
            read += len(chunk)
            if read > MAX_ANSWER_BYTES:
                raise _TooLarge(OversizedBody(read, declared=False))
            for piece in self._decoding.decode(chunk):
                yield piece
        for piece in self._decoding.flush():
            yield piece

    async def aclose(self) -> None:
        await self._stream.aclose()


# Statuses whose answer has no body, whatever a Content-Length says (RFC 9110).
_NO_BODY_STATUSES = frozenset({204, 304})


async def _read_capped(answer: httpx.Response, request: httpx.Request) -> httpx.Response:
    """``answer`` with its body read, raising ``_TooLarge`` rather than read past the cap.

    A body with a Content-Length is that long (the transport reads no more), so only one
    without it is counted as it comes: the usual answer, a 202 with a Content-Length, is
    read as before. A body with a Content-Encoding is decoded here, counted as it is
    decoded (``Decoding``), and comes back as a new response, decoded, without its
    Content-Encoding: httpx's decoders would undo each piece whole, a bomb at once.

    Raises:
        Undecodable: A body its Content-Encoding cannot undo.
    """
    declared = answer.headers.get("Content-Length")
    counted = declared is None or not declared.isdigit()
    if (
        declared is not None
        and not counted
        and int(declared) > MAX_ANSWER_BYTES
        and answer.status_code not in _NO_BODY_STATUSES
    ):
        raise _TooLarge(OversizedBody(int(declared), declared=True))
    stream = answer.stream
    if isinstance(stream, httpx.AsyncByteStream):
        encoding = answer.headers.get("Content-Encoding")
        if encoding is not None:
            capped = _Capped(stream, Decoding(encoding))
            body = b"".join([piece async for piece in capped])
            return _rebuilt(answer, request, body, answer.extensions)
        if counted:
            answer.stream = _Capped(stream, Decoding(""))
    await answer.aread()
    return answer


_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def outgoing_request(
    request: VendorRequest, timeout: float, progress: CallProgress | None = None
) -> httpx.Request:
    """The ``httpx.Request`` that ``httpx.Request(..., headers=, content=)`` would build.

    Built from the pre-encoded headers with ``stream=``, which skips httpx's per-request
    header normalisation (~20 us of a Deliver). The bytes are the same: ``Host`` first,
    then the call's headers, then ``Content-Length`` for a body (``Host`` and
    ``Content-Length: 0`` first for an empty POST), as ``Request._prepare`` orders them.
    ``progress``, when given, goes to the transport as the ``PROGRESS`` extension.
    """
    url = request.url
    content = request.content or b""
    raw: list[tuple[bytes, bytes]] = [(b"Host", url.netloc)] if url.host else []
    if content:
        raw += request.headers.wire
        raw.append((b"Content-Length", str(len(content)).encode("ascii")))
    else:
        if request.method in _BODY_METHODS:
            raw.append((b"Content-Length", b"0"))
        raw += request.headers.wire
    extensions: dict[str, object] = {
        "timeout": {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}
    }
    if progress is not None:
        extensions[PROGRESS] = progress
    outgoing = httpx.Request(
        request.method, url, headers=raw, stream=httpx.ByteStream(content), extensions=extensions
    )
    outgoing.read()  # sets .content, as httpx does for a body given as bytes
    return outgoing


class RetryingCaller:
    """Sends ``VendorRequest``s for one integration; see the module docstring.

    Args:
        integration: The integration's settings (limits, timeouts, retries, tokens).
        pool: The sharded httpx pool to send through.
        limiter: The per-tenant rate limiter.
        metrics: Where calls, latencies, retries and limiter waits are counted.
        clock: Monotonic clock that deadlines are expressed in.
        sleep: How to wait between retries.
        rng: Randomness for backoff jitter.
        backoff: Backoff base and cap.
        scrub: Replaces the integration's keys and every other secret in Amperity's
            answers (``responses.Scrubber``, built once by the client); the integration's
            keys alone by default.
    """

    def __init__(
        self,
        integration: IntegrationSettings,
        *,
        pool: ShardedPool,
        limiter: RateLimiter,
        metrics: Metrics,
        clock: Clock,
        sleep: Sleep,
        rng: random.Random,
        backoff: Backoff,
        scrub: responses.Scrubber | None = None,
    ) -> None:
        self._integration = integration
        self._scrub = scrub if scrub is not None else responses.Scrubber(integration)
        self._pool = pool
        self._limiter = limiter
        self._metrics = metrics
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self._backoff = backoff
        base_url = integration.base_url
        self._host = httpx.URL(base_url).host or base_url
        self._base_path = httpx.URL(base_url).path.rstrip("/")
        self._limiter_key = limiter_key(integration)
        self._children: dict[tuple[str, int, str], tuple[Increments, Observes]] = {}

    def _vendor_call(
        self, request: VendorRequest, status: int, attempts: int, started: float
    ) -> VendorCall:
        return VendorCall(
            method=request.method,
            url=str(request.url),
            status_code=status,
            attempts=attempts,
            duration=max(0.0, self._clock() - started),
            headers=dict(request.headers.shown),
        )

    async def call(
        self,
        request: VendorRequest,
        deadline: float | None,
        progress: CallProgress | None = None,
    ) -> tuple[httpx.Response, VendorCall]:
        """Send ``request`` until a final answer, a permanent error, or retries run out.

        Args:
            request: What to send.
            deadline: Absolute ``clock()`` time by which everything, retries included, ends.
            progress: Kept up to date as the call goes, for a caller that may cancel it.

        Returns:
            The final response (2xx or one of ``request.final_statuses``) and its record.

        Raises:
            AmperityError: With ``.call`` set, mapped from the last answer or failure.
        """
        integration = self._integration
        if progress is None:
            progress = CallProgress()
        started = self._clock()
        attempts = 0
        status = 0
        while True:
            progress.attempt = attempts + 1
            try:
                outcome = await self._send_one(request, deadline, attempts, status, progress)
            except AmperityError as unsent:
                with_call(unsent, self._vendor_call(request, status, attempts, started))
                raise
            attempts += 1
            status = outcome.status_code if isinstance(outcome, httpx.Response) else 0
            call = self._vendor_call(request, status, attempts, started)
            if isinstance(outcome, httpx.Response) and (
                status in request.final_statuses
                or (
                    outcome.is_success
                    and not (request.body_required and CUT_BODY in outcome.extensions)
                )
            ):
                return outcome, call
            cause, body = self._retryable_failure(request, outcome, attempts, call)
            delay, why = self._next_delay(outcome, attempts, deadline)
            if why:
                exhausted = responses.exhausted(
                    integration,
                    request.endpoint,
                    status=status or None,
                    cause=cause,
                    attempts=attempts,
                    retry_after=delay,
                    body=body,
                    why=why,
                    failure=self._failure(outcome),
                )
                raise with_call(exhausted, call)
            self._metrics.retries.labels(
                integration=integration.id, endpoint=request.endpoint, cause=cause
            ).inc()
            progress.stage = Stage.BACKOFF
            progress.attempt = attempts + 1
            await self._sleep(delay)

    def _retryable_failure(
        self,
        request: VendorRequest,
        outcome: httpx.Response | BaseException,
        attempts: int,
        call: VendorCall,
    ) -> tuple[str, responses.ErrorBody | None]:
        """Raise the error for a permanent failure; else return (retry cause, error body)."""
        integration = self._integration
        if isinstance(outcome, httpx.Response):
            status = outcome.status_code
            if outcome.is_success:  # a profile whose body was cut off: see call()
                cut: CutBody = outcome.extensions[CUT_BODY]
                return cut.cause, None
            body = responses.parse_error_body(outcome.content, self._scrub)
            location = outcome.headers.get("Location")
            if 300 <= status < 400 and location:
                error = self._redirected(request, status, location, attempts)
                raise with_call(error, call)
            if status not in RETRYABLE_STATUSES:
                error = responses.rejection(status, request.endpoint, integration, body, attempts)
                raise with_call(error, call)
            return str(status), body
        if isinstance(outcome, TunnelRefused):  # the proxy's policy: it would refuse again
            error = responses.tunnel_refused(
                integration,
                request.endpoint,
                status=outcome.status,
                target=outcome.target,
                proxy=f"{outcome.proxy.shown} ({outcome.proxy.variable})",
                attempts=attempts,
            )
            raise with_call(error, call) from outcome
        # A proxy that cannot be reached is retried like any connection failure: a DNS
        # "no such host" in its chain is about the proxy, not the tenant's host.
        if not isinstance(outcome, httpx.ProxyError) and is_unknown_host(outcome):
            error = responses.unknown_host(integration, request.endpoint, self._host)
            raise with_call(error, call) from outcome
        if isinstance(outcome, httpx.TimeoutException | TimeoutError):
            return "timeout", None
        return "connection", None

    def _redirected(
        self, request: VendorRequest, status: int, location: str, attempts: int
    ) -> AmperityError:
        """The error for a redirect, suggesting the base URL that would reach its target."""
        suggested = None
        try:
            target = request.url.join(location)
        except httpx.InvalidURL:
            target_text = location
        else:
            target_text = str(target)
            # The target is this same call under another base URL when its path ends with
            # the API path (the request's path after the base URL's own path).
            api_path = request.url.path.removeprefix(self._base_path)
            if target.path.endswith(api_path) and target.scheme in ("http", "https"):
                prefix = target.path.removesuffix(api_path)
                suggested = f"{target.scheme}://{target.netloc.decode('ascii')}{prefix}"
        return responses.redirected(
            self._integration,
            request.endpoint,
            status=status,
            location=target_text,
            suggested_base_url=suggested,
            attempts=attempts,
            scrub=self._scrub,
        )

    def _failure(self, outcome: httpx.Response | BaseException) -> str | None:
        """What a connection failure was, to show (None for a whole answer or a timeout)."""
        if isinstance(outcome, httpx.Response):
            cut: CutBody | None = outcome.extensions.get(CUT_BODY)
            if cut is None:
                return None
            return f"the body of its {outcome.status_code} answer was cut off ({cut.failure})"
        if isinstance(outcome, httpx.TimeoutException | TimeoutError):
            return None
        problem = certificate_problem(outcome)
        if problem is not None:
            return responses.TLS_REFUSED + problem
        text = str(outcome) or type(outcome).__name__
        return self._scrub(text)[:300]

    def _next_delay(
        self, outcome: httpx.Response | BaseException, attempts: int, deadline: float | None
    ) -> tuple[float, str]:
        """The wait before the next attempt, and why not to make one ("" to go ahead)."""
        retry = attempts - 1
        delay = self._backoff.delay(retry, self._rng)
        if isinstance(outcome, httpx.Response):
            asked = parse_retry_after(
                outcome.headers.get("Retry-After"), outcome.headers.get("Date"), time.time()
            )
            if asked is not None:
                delay = asked
        if retry >= self._integration.max_retries:
            return max(delay, self._backoff.ceiling(retry)), (
                f"the {self._integration.max_retries} retries (max_retries) ran out"
            )
        if deadline is not None and self._clock() + delay >= deadline:
            return delay, f"the call's deadline leaves no time for the next retry in {delay:.3f}s"
        if deadline is None and delay > MAX_RETRY_AFTER_WITHOUT_DEADLINE:
            return delay, f"Amperity asked to wait {delay:.0f}s before retrying"
        return delay, ""

    async def _send_one(
        self,
        request: VendorRequest,
        deadline: float | None,
        attempts: int,
        last_status: int,
        progress: CallProgress,
    ) -> httpx.Response | BaseException:
        """Borrow a pooled client, then take a rate-limit slot, then send one request.

        The slot is taken only once a connection is free, so the request leaves right
        after its grant: a slot granted while waiting for the pool could be spent much
        later, bunched with newer ones into one second over Amperity's limit (429s).

        Raises:
            AmperityError: Without ``.call``, when no slot or connection comes before the
                deadline (nothing was sent).
        """
        integration = self._integration
        remaining = None if deadline is None else max(deadline - self._clock(), 0.0)
        try:
            progress.stage = Stage.POOL
            async with self._pool.transport(remaining) as transport:
                progress.stage = Stage.RATE_LIMIT
                # The slot is held until the attempt ends, as Amperity counts a request when
                # it arrives; it is asked for once a transport is lent.
                async with self._limiter.slot(
                    self._limiter_key,
                    integration.rate_limit_per_second,
                    deadline,
                    request_timeout=integration.request_timeout,
                ) as waited:
                    if waited > 0:
                        self._metrics.rate_limiter_waits.labels(integration=integration.id).inc()
                    if deadline is not None and self._clock() >= deadline:
                        raise self._unsent(request, attempts, last_status)
                    return await self._attempt(transport, request, deadline, progress)
        except TimeoutError:
            raise self._unsent(request, attempts, last_status) from None

    def _unsent(self, request: VendorRequest, attempts: int, last_status: int) -> AmperityError:
        """The error for a deadline that passed before the next request could be sent."""
        return responses.exhausted(
            self._integration,
            request.endpoint,
            status=last_status or None,
            cause="deadline",
            attempts=attempts,
            retry_after=self._backoff.ceiling(attempts),
            body=None,
            why="the call's deadline passed before a request could be sent",
        )

    async def _attempt(
        self,
        transport: httpx.AsyncBaseTransport,
        request: VendorRequest,
        deadline: float | None,
        progress: CallProgress,
    ) -> httpx.Response | BaseException:
        """One request with its timeout; a transport failure is returned, not raised."""
        timeout = self._integration.request_timeout
        if deadline is not None:
            timeout = min(timeout, deadline - self._clock())
        endpoint = request.endpoint
        started = self._clock()
        outgoing = outgoing_request(request, max(timeout, 0.0), progress)
        # Handed to the transport, the request may leave at once: SENDING unless the
        # transport says it is still connecting (see progress.py).
        progress.stage = Stage.SENDING
        progress.status = 0
        # Set once the status line is in: from then on the status decides (module docstring).
        answer: httpx.Response | None = None
        try:
            async with asyncio.timeout(timeout):
                answer = await transport.handle_async_request(outgoing)
                progress.stage = Stage.ANSWERED
                progress.status = answer.status_code
                try:
                    response = await _read_capped(answer, outgoing)
                except Undecodable as undecodable:
                    # A body its Content-Encoding cannot undo (a proxy's doing: we ask for
                    # none). The status still decides: a 202 is delivered, a 503 retried.
                    encoding = undecodable.encoding
                    response = _without_body(answer, outgoing, UNDECODABLE, encoding)
                except _TooLarge as too_large:
                    response = self._oversized(request, answer, outgoing, too_large.body)
                finally:
                    await answer.aclose()
        except (httpx.TransportError, TimeoutError) as exc:
            if answer is not None:
                response = self._cut_off(request, answer, outgoing, exc)
                self._record(endpoint, response.status_code, started)
                return response
            self._record(endpoint, 0, started, no_answer_reason(exc))
            # Sent without an answer (a connection that failed to open sent nothing).
            if progress.stage is Stage.SENDING and not isinstance(
                exc, httpx.ConnectError | httpx.ConnectTimeout
            ):
                progress.unanswered = progress.attempt
            return exc
        except asyncio.CancelledError:
            # The caller gave up (its RPC was cancelled or ran out of time) during the
            # attempt: it counts, without an answer; ``progress`` says whether it had left.
            self._record(endpoint, 0, started, "CANCELLED")
            raise
        self._record(endpoint, response.status_code, started)
        return response

    def _cut_off(
        self,
        request: VendorRequest,
        answer: httpx.Response,
        outgoing: httpx.Request,
        exc: BaseException,
    ) -> httpx.Response:
        """``answer`` without its body, which ``exc`` cut off; logged, as it is rare."""
        if isinstance(exc, httpx.TimeoutException | TimeoutError):
            cut = CutBody("timeout", "the read timed out")
        else:
            text = str(exc) or type(exc).__name__
            shown = self._scrub(text)
            cut = CutBody("connection", shown[:300])
        status = answer.status_code
        outcome = _what_follows(
            request, answer, "it cannot be read from part of a body, so it is retried"
        )
        log.warning(
            "Amperity answered %d to the %s request, then its body was cut off (%s): %s",
            status,
            request.endpoint,
            cut.failure,
            outcome,
            extra={"endpoint": request.endpoint, "status_code": status, "cause": cut.cause},
        )
        return _without_body(answer, outgoing, CUT_BODY, cut)

    def _oversized(
        self,
        request: VendorRequest,
        answer: httpx.Response,
        outgoing: httpx.Request,
        body: OversizedBody,
    ) -> httpx.Response:
        """``answer`` without its body, too large to read; logged (never the body itself)."""
        status = answer.status_code
        outcome = _what_follows(request, answer, "it is not taken as a profile, nor retried")
        log.warning(
            "Amperity answered %d to the %s request with a body too large to read (%s): %s",
            status,
            request.endpoint,
            body,
            outcome,
            extra={
                "endpoint": request.endpoint,
                "status_code": status,
                "answer_bytes": body.size,
                "max_answer_bytes": MAX_ANSWER_BYTES,
            },
        )
        return _without_body(answer, outgoing, OVERSIZED, body)

    def _record(self, endpoint: str, status: int, started: float, reason: str = NO_REASON) -> None:
        children = self._children.get((endpoint, status, reason))
        if children is None:
            metrics = self._metrics
            labels = (self._integration.id, endpoint, str(status), reason)
            children = (
                metrics.partner_calls.tally(*labels),
                metrics.partner_latency.tally(endpoint),
            )
            self._children[endpoint, status, reason] = children
        children[0].inc()
        children[1].observe(max(0.0, self._clock() - started))


def _what_follows(request: VendorRequest, answer: httpx.Response, for_a_profile: str) -> str:
    """What becomes of an answer left without its body, to log: its status decides."""
    if not answer.is_success:
        return "its status decides"
    if request.body_required:
        return for_a_profile
    return "the status line is Amperity's acceptance, so it is not sent again"


UNDECODABLE = "undecodable_content_encoding"
"""The response extension naming the Content-Encoding of a body that could not be decoded."""


def _without_body(
    response: httpx.Response, request: httpx.Request, extension: str, value: object
) -> httpx.Response:
    """``response``'s status and headers with an empty body, marked with ``extension``.

    For a body that cannot be decoded (``UNDECODABLE``), that was cut off (``CUT_BODY``)
    or that is too large to read (``OVERSIZED``).
    """
    return _rebuilt(response, request, b"", {extension: value})


def _rebuilt(
    response: httpx.Response,
    request: httpx.Request,
    content: bytes,
    extensions: Mapping[str, object],
) -> httpx.Response:
    """``response``'s status and headers with ``content`` (read, decoded) as its body.

    The headers that described the body as sent go (its Content-Length is ``content``'s),
    the rest (``Retry-After``, ``Location``) stay.
    """
    headers = [
        (name, header)
        for name, header in response.headers.raw
        if name.lower() not in (b"content-encoding", b"content-length")
    ]
    return httpx.Response(
        response.status_code,
        headers=headers,
        content=content,
        request=request,
        extensions=dict(extensions),
    )


def with_call(error: AmperityError, call: VendorCall) -> AmperityError:
    """Attach the vendor request to an error (``errors.py`` declares no such attribute)."""
    error.call = call  # type: ignore[attr-defined]
    return error
