"""``Enricher``: the enrichment use case the gRPC servicer and the gateway call.

One way through for server events and browser calls alike: identifiers (event, then the
identity map) → cache → single flight → Profile API. Partner failures never raise: they
come back as warnings, with the last good attributes served stale when there are any.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Hashable, Mapping
from typing import Any, NamedTuple

from amperity_signal.config import CacheSettings, IntegrationSettings
from amperity_signal.enrich import messages
from amperity_signal.enrich.breaker import Breaker
from amperity_signal.enrich.cache import LOGGER_NAME, CacheBackend, Jitter
from amperity_signal.enrich.codec import JsonCache
from amperity_signal.enrich.identifiers import (
    Candidate,
    event_candidates,
    page_candidates,
    read_identifiers,
    remembers_any,
)
from amperity_signal.enrich.identity import IdentityMap
from amperity_signal.enrich.keys import profile_scope
from amperity_signal.enrich.personalise import Personaliser, context_for
from amperity_signal.enrich.ports import CacheStore, ProfileClient
from amperity_signal.enrich.resolution import Outcome, ReadAhead, Resolver, resolution_key
from amperity_signal.enrich.result import EnrichResult, attach, with_personalized
from amperity_signal.enrich.single_flight import SingleFlight
from amperity_signal.metrics import Metrics


class Gate(NamedTuple):
    """An entry that decides whether a page's visitor is read at all: its consent.

    Read from the enricher's cache, which the consent ledger shares (``build_server``
    gives both the one backend), with the page's first read on Redis.

    Attributes:
        key: The entry's cache key.
        admits: Whether the entry's stored bytes (None: absent, or unreadable during an
            outage) let the page read on.
    """

    key: str
    admits: Callable[[bytes | None], bool]


class Enricher:
    """Resolves visitors against Amperity and attaches their attributes to events.

    Args:
        settings: The ``[cache]`` table (TTLs, jitter, breaker).
        client_for: The Profile API client of an integration id, or None when it has none.
        cache: The shared cache (``build_cache``); a bare store is wrapped in a ``CacheBackend``.
        metrics: The service's metrics.
        clock: Monotonic seconds, for the breaker and deadlines (tests pass a fake clock).
        wall_clock: Epoch seconds, for the identity map's renewals, which replicas share.
        rng: Random source for TTL jitter (tests pass a seeded one).
        logger: Where ``partner resolve failed`` is logged (``amperity_signal.enrich``).
    """

    def __init__(
        self,
        settings: CacheSettings,
        *,
        client_for: Callable[[str], ProfileClient | None],
        cache: CacheStore,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self._settings = settings
        self._client_for = client_for
        backend = (
            cache
            if isinstance(cache, CacheBackend)
            else CacheBackend(cache, metrics=metrics, clock=clock)
        )
        self._cache = JsonCache(backend, metrics)
        self._metrics = metrics
        self._clock = clock
        log = logger or logging.getLogger(LOGGER_NAME)
        expiry = Jitter(settings.jitter, rng)
        self._flights: SingleFlight[Any] = SingleFlight(on_join=self._joined, clock=clock)
        self._breakers: dict[str, Breaker] = {}
        self.identity_map = IdentityMap(
            self._cache, ttl=settings.identity_ttl, expiry=expiry, wall_clock=wall_clock
        )
        self._resolver = Resolver(
            settings, cache=self._cache, expiry=expiry, metrics=metrics, logger=log, clock=clock
        )
        self._personaliser = Personaliser(
            ttl=settings.personalized_ttl,
            error_ttl=settings.error_ttl,
            cache=self._cache,
            flights=self._flights,
            expiry=expiry,
            failures_to_open=settings.breaker_failures,
            logger=log,
            clock=clock,
        )

    def _joined(self, key: Hashable) -> None:
        integration_id = key[0] if isinstance(key, tuple) else str(key)
        self._metrics.single_flight_joins.labels(integration=integration_id).inc()

    def _breaker(self, integration_id: str) -> Breaker:
        breaker = self._breakers.get(integration_id)
        if breaker is None:
            breaker = Breaker(
                integration_id,
                failures=self._settings.breaker_failures,
                cooldown=self._settings.breaker_cooldown,
                clock=self._clock,
                metrics=self._metrics,
            )
            self._breakers[integration_id] = breaker
        return breaker

    def _client(self, integration: IntegrationSettings) -> ProfileClient | None:
        return self._client_for(integration.id) if integration.profile_enabled else None

    async def remember(self, integration: IntegrationSettings, event: Mapping[str, Any]) -> bool:
        """Feed the identity map from an event carrying an email, a phone or a user id.

        ``enrich`` already does this for the events it sees, so calling both costs one extra
        cache read; call it for events that are delivered without enrichment. Returns True
        when the map changed.
        """
        if not integration.profile_enabled:
            return False
        return await self.identity_map.remember(integration.id, event, integration.linking_keys)

    async def enrich(
        self,
        integration: IntegrationSettings,
        event: Mapping[str, Any],
        *,
        deadline: float | None,
        posting: bool = False,
    ) -> EnrichResult:
        """Resolve the event's visitor and attach ``partner_attrs.amperity`` (and personalised).

        Args:
            integration: The integration the event belongs to.
            event: The event dict (not modified).
            deadline: Passed to the Profile API client.
            posting: The caller posts the event to the same host next and logs that
                call's failure (Deliver): a failure of the host itself (``HOST_FAILURES``)
                is then not logged here as well, so one failure is one line.

        Returns:
            The result; partner failures are reported in ``warnings``, never raised.
        """
        client = self._client(integration)
        if client is None:
            return EnrichResult(
                False,
                None,
                None,
                {},
                {},
                "disabled",
                (messages.not_configured(integration.enrichment_missing),),
                dict(event),
            )
        scope = _scope(integration)
        outcome = await self._outcome(integration, client, event, deadline, scope, posting=posting)
        enriched = attach(event, outcome.profile_id, outcome.attributes)
        warnings = list(outcome.warnings)
        personalized: dict[str, Any] = {}
        mappings = integration.personalisation_context_mappings
        if outcome.profile_id is not None and integration.personalisation_enabled and mappings:
            context = context_for(mappings, enriched)
            if context:
                personalized, more = await self._personaliser.personalised(
                    integration.id,
                    outcome.profile_id,
                    context,
                    scope=scope,
                    client=client,
                    breaker=self._breaker(integration.id),
                    deadline=deadline,
                    max_retries=integration.max_retries,
                    attributes_key=outcome.attributes_key,
                )
                warnings.extend(more)
                with_personalized(enriched, personalized)
        self._count_degraded(integration.id)
        return EnrichResult(
            resolved=outcome.profile_id is not None,
            amperity_id=outcome.profile_id,
            matched_key=outcome.matched_key,
            attributes=dict(outcome.attributes or {}),
            personalized_attributes=personalized,
            cache_status=outcome.status,
            warnings=tuple(dict.fromkeys(warnings)),
            event=enriched,
        )

    async def browser_attributes(
        self,
        integration: IntegrationSettings,
        anonymous_id: str,
        *,
        deadline: float | None,
        gate: Gate | None = None,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """A visitor's attributes and latest personalised attributes, for the browser.

        The browser never supplies identifiers or context: the visitor resolves through its
        anonymous id (as ``canonical_id``) and the identity map. Allowlist filtering is the
        caller's job. Unresolved or unconfigured visitors get ``({}, {})``, and so does one
        whose ``gate`` (its consent) does not admit it: nothing else is read for it then
        (on Redis nothing else read with the gate is used, counted or renewed).
        """
        client = self._client(integration)
        visitor = anonymous_id.strip()
        if client is None or not visitor:
            return {}, {}
        # The page's visitor carries no identifier the identity map learns (no traits, no
        # user_id): the map is only read, for the sources only it can fill in.
        linking_keys = integration.linking_keys
        remembers = remembers_any(linking_keys)
        scope = _scope(integration)
        read: ReadAhead | None = None
        if not remembers and gate is None:  # nothing to read before the walk
            found = page_candidates(linking_keys, visitor, {})
        elif self._cache.answers_now:  # the memory store: no round trip to save
            if gate is not None and not gate.admits(self._cache.stored_now(gate.key)):
                return {}, {}
            remembered = (
                await self.identity_map.identifiers(integration.id, visitor) if remembers else {}
            )
            found = page_candidates(linking_keys, visitor, remembered)
        else:  # Redis: the gate, the map and the cookie's resolutions in one round trip
            page = await self._read_ahead(integration, visitor, scope, gate, remembers)
            if page is None:
                return {}, {}
            found, read = page
        outcome = await self._resolved(
            integration, client, found, deadline, scope, latest=True, read=read, gate=gate
        )
        self._count_degraded(integration.id)
        if outcome.profile_id is None:
            return {}, {}
        personalized = outcome.latest  # a hit read it with the attributes
        if personalized is None:
            personalized = await self._personaliser.latest(
                scope, outcome.profile_id, attributes_key=outcome.attributes_key
            )
        return dict(outcome.attributes or {}), personalized

    async def _read_ahead(
        self,
        integration: IntegrationSettings,
        visitor: str,
        scope: str,
        gate: Gate | None,
        remembers: bool,
    ) -> tuple[tuple[Candidate, ...], ReadAhead | None] | None:
        """The page's lookups and their resolutions, the cookie's read with its first read.

        Every page's lookups include its cookie's, known before the map answers, so their
        resolutions are read with the map (when the linking keys ``remembers`` a source it
        fills in), and the ``gate`` (the visitor's consent) with them, in one round trip:
        for most pages' visitors, whom the map does not know, that is all of them. For a
        visitor it knows, the remembered lookups' resolutions are read next. Each entry is
        counted once, when it is used (the cookie's when the walk is handed it, as the
        walk's own read counted it); None when the gate does not admit the visitor, whose
        other entries are then never used.
        """
        linking_keys = integration.linking_keys
        cookie = page_candidates(linking_keys, visitor, {})
        keys = [resolution_key(scope, candidate) for candidate in cookie]
        first = [] if gate is None else [gate.key]
        entry = None
        if remembers:
            entry = self.identity_map.entry_key(integration.id, visitor)
            first.append(entry)
        items = await self._cache.read_ahead((*first, *keys))
        if gate is not None and not gate.admits(items[0]):
            return None
        ahead = items[len(first) :]
        remembered: dict[str, str] = {}
        if entry is not None:
            remembered = await self.identity_map.identifiers_in(entry, items[len(first) - 1])
        if not keys:  # nothing read ahead (the cookie gives no lookup)
            return page_candidates(linking_keys, visitor, remembered), None
        if not remembered:
            return cookie, ReadAhead(keys, self._cache.decode_ahead(keys, ahead))
        found = page_candidates(linking_keys, visitor, remembered)
        rest = [candidate for candidate in found if candidate not in cookie]
        rest_keys = [resolution_key(scope, candidate) for candidate in rest]
        # Read before decoding the read-ahead, which a failure of this read makes lost too.
        states = dict(zip(rest, await self._cache.get_many(rest_keys), strict=True))
        by_key = dict(zip(rest, rest_keys, strict=True))
        for candidate, key, state in zip(
            cookie, keys, self._cache.decode_ahead(keys, ahead), strict=True
        ):
            states[candidate], by_key[candidate] = state, key
        return found, ReadAhead([by_key[c] for c in found], [states[c] for c in found])

    async def _outcome(
        self,
        integration: IntegrationSettings,
        client: ProfileClient,
        event: Mapping[str, Any],
        deadline: float | None,
        scope: str,
        *,
        posting: bool,
    ) -> Outcome:
        """Resolve from the cache, else through one shared partner call per visitor.

        The event's identifiers are remembered on the way (one identity-map read serves both
        learning and filling in sources the event lacks).
        """
        linking_keys = integration.linking_keys
        remembered: dict[str, str] = {}
        ids = read_identifiers(linking_keys, event)
        visitor = ids.visitor
        if visitor is not None and ids.learned:
            remembered, _ = await self.identity_map.learn(integration.id, visitor, ids.learned)
        elif visitor is not None and ids.lacking:
            remembered = await self.identity_map.identifiers(integration.id, visitor)
        found = event_candidates(linking_keys, ids.prepared, remembered)
        return await self._resolved(integration, client, found, deadline, scope, posting=posting)

    async def _resolved(
        self,
        integration: IntegrationSettings,
        client: ProfileClient,
        found: tuple[Candidate, ...],
        deadline: float | None,
        scope: str,
        *,
        latest: bool = False,
        read: ReadAhead | None = None,
        gate: Gate | None = None,
        posting: bool = False,
    ) -> Outcome:
        """The outcome of the visitor's candidates: the cache's, else a shared partner call.

        ``latest`` and ``read`` as for ``Resolver.cached``. ``gate``: the page's consent, read
        again after a partner call (see ``_still_admitted``); unresolved when it no longer
        admits the visitor. ``posting`` as for ``enrich``.
        """
        if not found:
            warning = messages.no_sources([lk.source for lk in integration.linking_keys])
            return Outcome(None, None, None, "miss", (warning,))
        breaker = self._breaker(integration.id)
        cached = await self._resolver.cached(
            integration.id,
            found,
            scope=scope,
            client=client,
            breaker=breaker,
            latest=latest,
            read=read,
        )
        if cached is not None:
            return cached

        async def resolve() -> Outcome:
            return await self._resolver.resolve(
                integration.id,
                found,
                scope=scope,
                client=client,
                breaker=breaker,
                deadline=deadline,
                max_retries=integration.max_retries,
                posting=posting,
            )

        def late() -> Outcome:
            return Outcome(None, None, None, "miss", (messages.SHARED_CALL_LATE,), deadline)

        outcome: Outcome = await self._flights.run_within(
            (integration.id, "resolve", found),
            resolve,
            deadline=deadline,
            ran_out_at=_ran_out_at,
            late=late,
        )
        if gate is not None and not await self._still_admitted(gate):
            return Outcome(None, None, None, outcome.status)
        return outcome

    async def _still_admitted(self, gate: Gate) -> bool:
        """Whether the page's consent still admits its visitor, read again now.

        A partner call takes up to the page's deadline (seconds when Amperity is slow): a
        withdrawal recorded meanwhile (``RecordConsent``, another tab's ``/v1/consent``) must
        hide the profile from this answer too, not only from the next page's. Made after a
        partner call only: a cached answer comes a round trip or two after the first read.
        Never counted as a hit or a miss (as the first read); fails closed in an outage.
        """
        if self._cache.answers_now:
            return gate.admits(self._cache.stored_now(gate.key))
        (stored,) = await self._cache.read_ahead((gate.key,))
        return gate.admits(stored)

    def _count_degraded(self, integration_id: str) -> None:
        if not self._cache.available:
            self._metrics.enrichment_degraded.labels(
                integration=integration_id, cause="cache_unavailable"
            ).inc()


def _ran_out_at(outcome: Outcome) -> float | None:
    return outcome.ran_out_at


def _scope(integration: IntegrationSettings) -> str:
    """The cache scope of the integration's profiles: its id, tenant and collection."""
    return profile_scope(
        integration.id, integration.tenant_id, integration.profile_collection_id or ""
    )
