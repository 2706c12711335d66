"""``AmperityClient``: realtime event ingest and Profile API calls for one integration.

Every call is rate limited per tenant (ingest and profile together), sent over a sharded
pool, retried with full-jitter backoff on 429/5xx/connection errors inside the caller's
deadline, and mapped to an error of ``amperity_signal.errors`` that says what to fix.
Every ``AmperityError`` raised here carries ``.call``, the ``VendorCall`` made (read it
with ``vendor_call(error)``).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

import httpx
import orjson

from amperity_signal.amperity import endpoints, responses
from amperity_signal.amperity.body import encode_event, encode_json
from amperity_signal.amperity.caller import (
    CUT_BODY,
    OVERSIZED,
    UNDECODABLE,
    CallHeaders,
    RetryingCaller,
    VendorRequest,
    call_headers,
    with_call,
)
from amperity_signal.amperity.models import IngestResult, Profile, VendorCall, profile_from_json
from amperity_signal.amperity.pool import ShardedPool
from amperity_signal.amperity.progress import CallProgress
from amperity_signal.amperity.ratelimit import Clock, RateLimiter, Sleep
from amperity_signal.amperity.retry import Backoff
from amperity_signal.config import IntegrationSettings
from amperity_signal.errors import AmperityError, AmperityRejected, ProfileUnavailable
from amperity_signal.metrics import Metrics
from amperity_signal.proxies import ProxyRules
from amperity_signal.trust import TrustedCertificates

DOCUMENTED_INGEST_STATUSES = frozenset({202, 204})
"""The 2xx answers Amperity documents for realtime ingest: published, and accepted while
the stream drops events. Any other 2xx is taken as accepted and flagged (``IngestResult``)."""


def vendor_call(error: BaseException) -> VendorCall | None:
    """The vendor request an error raised by ``AmperityClient`` carries, if any."""
    call = getattr(error, "call", None)
    return call if isinstance(call, VendorCall) else None


class AmperityClient:
    """Talks to one integration's Amperity tenant; the only code that knows its wire format.

    Args:
        integration: The integration's settings (base URL, tenant, keys, ids, limits).
        limiter: The per-tenant rate limiter (memory or Redis), shared by all clients.
        metrics: Where call counts, latencies, retries and limiter waits are recorded.
        transport: An httpx transport to use instead of the network (tests, sandbox).
        shards: How many httpx clients to spread requests over.
        max_in_flight_per_shard: Connections (and requests in flight) per client.
        clock: Monotonic clock that deadlines are expressed in.
        sleep: How to wait between retries (a fake in tests).
        rng: Randomness for backoff jitter.
        backoff: Backoff base and cap (0.1 s and 5 s by default).
        proxies: Outbound proxies (``Settings.proxies``, read from the environment); none
            by default. Ignored with a given ``transport``.
        trusted_certificates: The CA certificates TLS is checked against
            (``Settings.trusted_certificates``); certifi's by default. Ignored with a given
            ``transport``.
        redact: Every secret the service holds (``Settings.secret_values``: the admin
            token, every integration's keys and pipeline key, a Redis password), replaced
            in what Amperity answers as the integration's own keys are.
    """

    def __init__(
        self,
        integration: IntegrationSettings,
        *,
        limiter: RateLimiter,
        metrics: Metrics,
        transport: httpx.AsyncBaseTransport | None = None,
        shards: int = 8,
        max_in_flight_per_shard: int = 4,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        backoff: Backoff | None = None,
        proxies: ProxyRules | None = None,
        trusted_certificates: TrustedCertificates | None = None,
        redact: Iterable[str] = (),
    ) -> None:
        self._integration = integration
        self._base_url = integration.base_url
        # Parsed and built once, not per event (httpx.URL parsing showed in Deliver profiles).
        self._events_url = httpx.URL(
            self._base_url + endpoints.events_path(integration.event_stream_id)
        )
        self._events_headers = call_headers(
            endpoints.request_headers(
                integration.tenant_id, integration.api_key.get_secret_value(), json_body=True
            )
        )
        self._pool = ShardedPool(
            shards=shards,
            max_in_flight_per_shard=max_in_flight_per_shard,
            transport=transport,
            proxies=proxies,
            # One context for every shard: built (the CA list parsed) once per client.
            ssl_context=(
                trusted_certificates.ssl_context()
                if transport is None and trusted_certificates is not None
                else None
            ),
        )
        # What Amperity answers, error bodies and profiles alike, may quote the key it was
        # sent (an echo), a proxy's credentials (its error page quoting the
        # Proxy-Authorization it got), or any secret an event carried (a page may post its
        # pipeline key, an operator paste a token): one scrubber for all of them, built once.
        self._scrub = responses.Scrubber(
            integration, (*(proxies.secrets if proxies is not None else ()), *redact)
        )
        self._caller = RetryingCaller(
            integration,
            pool=self._pool,
            limiter=limiter,
            metrics=metrics,
            clock=clock,
            sleep=sleep,
            # Jitter only spreads retries out; it needs no cryptographic strength.
            rng=rng if rng is not None else random.Random(),  # noqa: S311
            backoff=backoff if backoff is not None else Backoff(),
            scrub=self._scrub,
        )

    def __repr__(self) -> str:
        return f"AmperityClient(integration={self._integration.id!r}, base_url={self._base_url!r})"

    @property
    def in_flight_per_shard(self) -> list[int]:
        """Requests in flight on each shard of the pool."""
        return self._pool.in_flight

    @property
    def waiting_for_connection(self) -> int:
        """Requests waiting for a connection, every one of the pool's being in use."""
        return self._pool.waiting

    async def post_event(
        self,
        payload: Mapping[str, Any],
        *,
        deadline: float | None,
        progress: CallProgress | None = None,
    ) -> IngestResult:
        """POST one event to the integration's realtime stream.

        Args:
            payload: The event body: one JSON object, at most 65,536 bytes encoded.
            deadline: Absolute ``clock()`` time by which the call, retries included, ends.
            progress: Kept up to date as the call goes: read it when the call is cancelled
                to tell whether the event had been sent (``progress.py``).

        Returns:
            The result; ``dropping`` is True when the stream accepts but drops events (204).
            A 2xx is the result even when its body is then cut off (``body_cut`` says
            how): Amperity accepted the event, so it is not sent again. So is a 2xx
            Amperity does not document (200, 201, 206...): accepted, and flagged
            ``unexpected_status``.

        Raises:
            InvalidEvent: Before any request, when the body is not strict JSON or too large.
            AmperityError: When Amperity refuses it or cannot be reached (see the docs).
        """
        request = VendorRequest(
            endpoint=endpoints.EVENTS,
            method="POST",
            url=self._events_url,
            headers=self._events_headers,
            content=encode_event(payload),
            final_statuses=frozenset(),
        )
        response, call = await self._caller.call(request, deadline, progress)
        status = response.status_code
        cut = response.extensions.get(CUT_BODY)
        return IngestResult(
            status,
            status == 204,
            call,
            cut.failure if cut is not None else "",
            unexpected_status=status not in DOCUMENTED_INGEST_STATUSES,
        )

    async def lookup(self, key: str, value: str, *, deadline: float | None) -> Profile | None:
        """Find the profile holding ``value`` under linking key ``key`` (POSTed, not in URLs).

        Args:
            key: The linking key name, one of the collection's ``linking_keys``.
            value: The identifier (already hashed when the linking key says so).
            deadline: Absolute ``clock()`` time by which the call, retries included, ends.

        Returns:
            The profile, or None when nothing matches (404). Any of the integration's
            keys in its attributes is replaced with ``[REDACTED]`` (``responses.Scrubber``).

        Raises:
            ProfileUnavailable: When the integration has no Profile API key or collection.
            AmperityError: When Amperity refuses the lookup or cannot be reached.
        """
        collection_id, token = self._profile_credentials()
        headers = call_headers(
            endpoints.request_headers(self._integration.tenant_id, token, json_body=True)
        )
        request = VendorRequest(
            endpoint=endpoints.LOOKUP,
            method="POST",
            url=self._url(endpoints.LOOKUP, "POST", endpoints.lookup_path(collection_id), headers),
            headers=headers,
            content=encode_json(endpoints.lookup_body(key, value)),
            final_statuses=frozenset({404}),
            body_required=True,
        )
        return await self._profile_call(request, deadline, collection_id, None)

    async def get_profile(
        self,
        profile_id: str,
        *,
        context: Mapping[str, str] | None = None,
        deadline: float | None,
    ) -> Profile | None:
        """GET a profile's enriched attributes, context-dependent when ``context`` is given.

        Args:
            profile_id: The profile id (``amperity_id``) a lookup returned.
            context: Personalisation context target to value, sent as query parameters.
            deadline: Absolute ``clock()`` time by which the call, retries included, ends.

        Returns:
            The profile, or None when it is not in the collection (404). Any of the
            integration's keys in its attributes is replaced with ``[REDACTED]``.

        Raises:
            ProfileUnavailable: When the integration has no Profile API key or collection.
            AmperityRejected: ``CONTEXT_TOO_LONG``, before any request, when the query would
                be longer than ``endpoints.MAX_PROFILE_QUERY_LENGTH`` URL-encoded.
            AmperityError: When Amperity refuses the request or cannot be reached.
        """
        collection_id, token = self._profile_credentials()
        path = endpoints.profile_path(collection_id, profile_id)
        params = endpoints.profile_params(context)
        headers = call_headers(
            endpoints.request_headers(self._integration.tenant_id, token, json_body=False)
        )
        length = endpoints.query_length(params)
        if length > endpoints.MAX_PROFILE_QUERY_LENGTH:
            raise self._context_too_long(path, params, length, headers)
        request = VendorRequest(
            endpoint=endpoints.PROFILE,
            method="GET",
            url=self._url(endpoints.PROFILE, "GET", path, headers, params),
            headers=headers,
            content=None,
            final_statuses=frozenset({404}),
            body_required=True,
        )
        return await self._profile_call(request, deadline, collection_id, profile_id)

    async def aclose(self) -> None:
        """Close every pooled connection."""
        await self._pool.aclose()

    def _url(
        self,
        endpoint: str,
        method: str,
        path: str,
        headers: CallHeaders,
        params: list[tuple[str, str]] | None = None,
    ) -> httpx.URL:
        """The URL of a call, or ``URL_TOO_LONG`` raised (nothing sent) when httpx refuses it.

        A path can only be refused for its length (every segment is quoted): a profile id
        Amperity gave that is longer than the 64 KB httpx takes. It used to raise
        ``httpx.InvalidURL`` out of the client, which no caller expects.
        """
        try:
            return httpx.URL(self._base_url + path, params=params)
        except httpx.InvalidURL as exc:
            problem = str(exc)
            message = (
                f"the {endpoint} request was not sent: its URL cannot be built ({problem}); "
                "an id in its path is longer than any Amperity id"
            )
            error = AmperityRejected(
                message,
                reason="URL_TOO_LONG",
                attempts=0,
                metadata={"endpoint": endpoint, "problem": problem},
            )
            raise self._unsent(error, method, self._base_url, headers) from None

    def _context_too_long(
        self, path: str, params: list[tuple[str, str]], length: int, headers: CallHeaders
    ) -> AmperityError:
        """``CONTEXT_TOO_LONG``: the personalisation context would make too long a query."""
        target, target_length = endpoints.longest_parameter(params)
        limit = endpoints.MAX_PROFILE_QUERY_LENGTH
        message = (
            f"personalisation context too long: the profile request's query would be "
            f"{length:,} characters URL-encoded, over the {limit:,} allowed, {target} taking "
            f"{target_length:,} of them; nothing was sent, and this context gets no "
            f"personalised attributes. Map a short value (a category, a tier, an id) to "
            f"{target} in personalisation_context_mappings, not a whole document."
        )
        error = AmperityRejected(
            message,
            reason="CONTEXT_TOO_LONG",
            attempts=0,
            metadata={
                "query_length": str(length),
                "limit": str(limit),
                "target": target,
                "target_length": str(target_length),
            },
        )
        # The URL shown stops at the path: the query is what was too long to send.
        return self._unsent(error, "GET", self._base_url + path, headers)

    @staticmethod
    def _unsent(error: AmperityError, method: str, url: str, headers: CallHeaders) -> AmperityError:
        """``error`` carrying a ``VendorCall`` of no attempt (the request was never sent)."""
        call = VendorCall(
            method=method,
            url=url,
            status_code=0,
            attempts=0,
            duration=0.0,
            headers=dict(headers.shown),
        )
        return with_call(error, call)

    def _profile_credentials(self) -> tuple[str, str]:
        integration = self._integration
        if integration.profile_api_key is None or not integration.profile_collection_id:
            raise ProfileUnavailable(
                f"integration {integration.id} has no Profile API access: set profile_api_key "
                "(a JWT with Profile Read Access) and profile_collection_id (apc-...).",
                metadata={"integration_id": integration.id},
            )
        return integration.profile_collection_id, integration.profile_api_key.get_secret_value()

    async def _profile_call(
        self,
        request: VendorRequest,
        deadline: float | None,
        collection_id: str,
        profile_id: str | None,
    ) -> Profile | None:
        response, call = await self._caller.call(request, deadline)
        if response.status_code == 404:
            return None
        undecodable = response.extensions.get(UNDECODABLE)
        oversized = response.extensions.get(OVERSIZED)
        if undecodable is not None:
            problem = (
                f"its body is not a profile (it is not valid {undecodable!r} Content-Encoding)"
            )
        elif oversized is not None:
            # Not read, so neither parsed nor cached: no profile is that large.
            problem = f"its body is too large to be a profile ({oversized}), so it was not read"
        else:
            try:
                profile = profile_from_json(
                    orjson.loads(response.content), collection_id, profile_id
                )
            except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
                problem = f"its body is not a profile ({exc})"
            else:
                # Here, once per answer, before anything caches it: cache hits pay nothing.
                return replace(profile, attributes=self._scrub.json(profile.attributes))
        error = responses.bad_response(
            self._integration, request.endpoint, response.status_code, problem, call.attempts
        )
        raise with_call(error, call) from None
