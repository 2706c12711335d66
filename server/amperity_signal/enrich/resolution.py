"""Resolve a visitor through the linking keys and fetch its attributes, cache first.

Order of work for one visitor (``Resolver.resolve``):

1. Read every candidate's resolution entry in one cache round trip.
2. Walk the candidates in linking-key order. A cached profile id wins; a cached "not found"
   or non-blocking error skips to the next key; an uncached candidate is looked up
   (``POST keychain``) and the answer is cached: the profile id for ``resolution_ttl``, a
   404 as "not found" for ``not_found_ttl``, a failure as "error" for ``error_ttl``.
3. With a profile id, attributes come from the lookup's profile, the attribute cache, or
   ``get_profile``; when that refresh fails the last good copy is served, marked stale.
4. When a failure stops the walk (an outage, the breaker, a refused key), no further call is
   made, but a later key's cached resolution still answers, with the failure's warning: the
   first key that resolves wins, and a key that failed did not resolve.

A miss carries the troubleshooting row "Profile lookups always 404" (the linking-keys
advice) while no linking key of the integration's collection (its ``scope``) has matched in
this process, by a partner call or a cached resolution, or once the lookups answered 404
since the last match number ``UNMATCHED_LOOKUPS_TO_LOG``: a 404 is also simply a visitor
Amperity does not know, most first-touch visitors on a healthy collection, whose streaks of
404s are short. When a streak reaches ``UNMATCHED_LOOKUPS_TO_LOG``, the advice is logged,
once; the next match ends the streak and re-arms it (a collection that matched and then
broke, its linking keys changed at Amperity, is caught too).

A failure the call's own deadline caused (nothing sent, or retrying cut short by it) is not
remembered as an error: the next caller's deadline may be fine. The outcome names that
deadline (``ran_out_at``), so a single-flight joiner with more time can call again.

``Resolver.cached`` makes the same walk from the cache only and returns None when a partner
call would be needed; the enricher runs it first and takes the single-flight path only then.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, NamedTuple

from amperity_signal.config import CacheSettings
from amperity_signal.enrich import messages
from amperity_signal.enrich.breaker import Breaker, is_outage, nothing_sent, ran_out_of_time
from amperity_signal.enrich.codec import JsonCache, failure_entry, read_failure
from amperity_signal.enrich.identifiers import Candidate
from amperity_signal.enrich.keys import cache_key, rekind
from amperity_signal.enrich.ports import ProfileClient, ProfileLike
from amperity_signal.errors import (
    AmperityAuthError,
    AmperityError,
    AmperityMisconfigured,
    AmperityRejected,
    AmperityUnavailable,
)
from amperity_signal.metrics import Metrics

CacheStatus = Literal["hit", "miss", "stale", "dampened", "disabled"]

UNMATCHED_LOOKUPS_TO_LOG: Final = 1_000
"""Profile API lookups of a collection answering 404 in a row (since the last match, or
since the process started) before the advice is logged, and carried again by misses of a
collection that has matched. A healthy collection's visitors may be mostly unknown (most
are anonymous), but with even 1 % of lookups matching, 1,000 misses in a row happen by
chance with probability 0.99 ** 1000, about 4e-5. Before any match, misses carry the advice
from the first one."""


HOST_FAILURES: Final = frozenset({"TENANT_HOST_NOT_FOUND"})
"""Failures of the integration's host itself (DNS has no such host), which every call of
the integration meets alike: a Deliver's event POST after its lookup, whose ``delivery
failed`` line carries the same advice (``Resolver.resolve``'s ``posting``)."""


class Outcome(NamedTuple):
    """What resolution found for one visitor (a NamedTuple: one is built per request, cheaply).

    Attributes:
        profile_id: The resolved ``amperity_id``, or None.
        matched_key: The linking key that matched (or whose cached match was used).
        attributes: The profile's attributes, or None when none could be obtained.
        status: How the answer was obtained (hit, miss, stale, dampened).
        warnings: What went wrong, with the fix.
        ran_out_at: The deadline a partner call of this resolution ran out of time against
            (nothing sent, or its retrying cut short by it), or None. A caller whose own
            deadline is later could get a better answer by calling again.
        attributes_key: The profile's ``attrs`` cache key when the answer came from it, or
            None; the profile's other entries are named by the same digest (``rekind``).
        latest: The profile's latest personalised attributes (``{}``: none), when they were
            read with its attributes (``Resolver.cached`` with ``latest``), else None.
    """

    profile_id: str | None
    matched_key: str | None
    attributes: dict[str, Any] | None
    status: CacheStatus
    warnings: tuple[str, ...] = ()
    ran_out_at: float | None = None
    attributes_key: str | None = None
    latest: dict[str, Any] | None = None


def resolution_key(scope: str, candidate: Candidate) -> str:
    """The cache key of a candidate's resolution entry (its profile id, or a miss)."""
    return cache_key("res", scope, candidate.key, candidate.value)


class ReadAhead(NamedTuple):
    """Resolution entries read before the walk: their keys, and their decoded values."""

    keys: Sequence[str]
    states: Sequence[Any]


@dataclass
class _Round:
    """Bookkeeping of one walk over the candidates."""

    called: bool = False
    dampened: bool = False
    not_found: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    ran_out_at: float | None = None

    def unresolved(self, total: int, *, advise: bool) -> Outcome:
        """The walk's outcome; ``advise``: a miss carries the linking-keys advice."""
        warnings = list(self.warnings)
        if total and len(self.not_found) == total:
            warnings.append(messages.not_found(self.not_found))
            if advise:
                warnings.append(messages.LINKING_KEYS_404)
        status: CacheStatus = "dampened" if self.dampened and not self.called else "miss"
        return Outcome(None, None, None, status, tuple(warnings), self.ran_out_at)


class _Call(NamedTuple):
    """The parts of one resolution every step needs (built per request, so a NamedTuple)."""

    integration_id: str
    scope: str
    client: ProfileClient
    breaker: Breaker
    deadline: float | None
    allow_calls: bool
    max_retries: int = 0
    latest: bool = False
    posting: bool = False


class Resolver:
    """Linking-key resolution and attribute fetching over the shared cache.

    Args:
        settings: TTLs from the ``[cache]`` table.
        cache: The cache backend.
        expiry: Applies jitter to a TTL.
        metrics: ``cache_events`` gets ``res/dampened`` and ``good/stale`` counts.
        logger: Where ``partner resolve failed`` is logged.
        clock: Monotonic seconds, the clock deadlines are expressed in.
    """

    def __init__(
        self,
        settings: CacheSettings,
        *,
        cache: JsonCache,
        expiry: Callable[[float], float],
        metrics: Metrics,
        logger: logging.Logger,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._clock = clock
        # Per answer while dampened or stale, with no call to Amperity: tallied.
        self._dampened = metrics.cache_events.tally("res", "dampened")
        self._stale = metrics.cache_events.tally("good", "stale")
        self._cache = cache
        self._expiry = expiry
        self._logger = logger
        # The scopes (integration, tenant, collection) a linking key has matched in, each
        # with the lookups answered 404 since its last match (a match stores 0: one dict
        # store on the hit path); and the lookups answered 404 in each that never has.
        # One entry per configured collection, nothing per visitor.
        self._since_match: dict[str, int] = {}
        self._unmatched: dict[str, int] = {}

    async def cached(
        self,
        integration_id: str,
        candidates: Sequence[Candidate],
        *,
        scope: str,
        client: ProfileClient,
        breaker: Breaker,
        latest: bool = False,
        read: ReadAhead | None = None,
    ) -> Outcome | None:
        """The outcome from the cache alone, or None when a partner call is needed.

        ``scope`` is the integration's ``profile_scope`` (the cache keys' first part).
        With ``latest`` a hit also reads the profile's latest personalised attributes, with
        its attributes, in one round trip (``Outcome.latest``; the browser's page asks).
        ``read``: the candidates' resolution entries, already read (and counted) with the
        identity map (``resolution_key`` of each candidate, in order).
        """
        call = _Call(integration_id, scope, client, breaker, None, False, 0, latest)
        return await self._walk(call, candidates, read)

    async def resolve(
        self,
        integration_id: str,
        candidates: Sequence[Candidate],
        *,
        scope: str,
        client: ProfileClient,
        breaker: Breaker,
        deadline: float | None,
        max_retries: int,
        posting: bool = False,
    ) -> Outcome:
        """Resolve a visitor and get its attributes, calling the Profile API where needed.

        Called after ``cached`` found a call needed: the walk re-reads the entries (another
        flight may just have written them) without counting them again in the hit ratio.
        ``max_retries`` is the integration's, to tell retries running out from the deadline.
        ``posting``: the caller's POST to the same host follows and logs a failure of the
        host (``HOST_FAILURES``), which is then not logged here too.
        """
        call = _Call(
            integration_id,
            scope,
            client,
            breaker,
            deadline,
            allow_calls=True,
            max_retries=max_retries,
            posting=posting,
        )
        outcome = await self._walk(call, candidates)
        return outcome if outcome is not None else Outcome(None, None, None, "miss")

    async def _walk(
        self, call: _Call, candidates: Sequence[Candidate], read: ReadAhead | None = None
    ) -> Outcome | None:
        """Walk the candidates in order; None when a call is needed but not allowed."""
        scope = call.scope
        # The walk that may call re-reads what the cache-only walk before it counted.
        count = not call.allow_calls
        # ``read``: the entries, read before the walk and counted then.
        # (``resolution_key`` inlined: a call per candidate of every request.)
        keys = (
            read.keys
            if read is not None
            else [cache_key("res", scope, c.key, c.value) for c in candidates]
        )
        states = read.states if read is not None else await self._cache.get_many(keys, count=count)
        walk: _Round | None = None
        stopped_at = len(candidates)
        for index, (candidate, key, state) in enumerate(zip(candidates, keys, states, strict=True)):
            marker = state if isinstance(state, dict) else {}
            profile_id = marker.get("profile_id")
            attributes = None
            if isinstance(profile_id, str):
                self._since_match[scope] = 0  # a linking key matched: the 404 streak ends
                attrs_key = cache_key("attrs", scope, "profile_id", profile_id)
                # The page's visitor: its latest personalised entry in the same round trip.
                latest_key = rekind(attrs_key, "perslast") if call.latest else None
                attributes, stored = await self._cache.get_with(attrs_key, latest_key, count=count)
                if isinstance(attributes, dict):  # a hit: answered with no further await
                    return self._hit(call, profile_id, candidate, attrs_key, attributes, stored)
            walk = walk or _Round()  # the walk's bookkeeping, which a hit does without
            if isinstance(profile_id, str):
                refused = await self._refused(scope, profile_id, candidate, attributes)
                if refused is not None or not call.allow_calls:
                    return refused
                found = await self._refresh(call, profile_id, candidate, walk)
                if found is not None:
                    return found
                await self._cache.delete(key)  # the profile is gone: look the key up again
            elif marker.get("miss") == "not_found":
                self._dampened.inc()
                walk.dampened = True
                walk.not_found.append(candidate.key)
                continue
            elif marker.get("miss") == "error":
                self._dampened.inc()
                walk.dampened = True
                walk.warnings.append(
                    messages.dampened_error(
                        str(marker.get("reason")), marker.get("message"), stale=False
                    )
                )
                if marker.get("stop"):
                    stopped_at = index
                    break
                continue
            if not call.allow_calls:
                return None
            done, stop = await self._lookup(call, candidate, key, walk)
            if done is not None:
                return done
            if stop:
                stopped_at = index
                break
        return await self._unresolved(call, candidates, states, stopped_at, walk or _Round())

    def _hit(  # noqa: PLR0917 - one hit's parts
        self,
        call: _Call,
        profile_id: str,
        candidate: Candidate,
        attrs_key: str,
        attributes: dict[str, Any],
        stored: bytes | None,
    ) -> Outcome:
        """A cached profile's outcome; with ``call.latest``, its latest entry (``stored``)."""
        latest = None
        if call.latest:
            found = self._cache.decode(
                rekind(attrs_key, "perslast"), stored, count=not call.allow_calls
            )
            latest = found if isinstance(found, dict) else {}
        return Outcome(profile_id, candidate.key, attributes, "hit", (), None, attrs_key, latest)

    async def _unresolved(
        self,
        call: _Call,
        candidates: Sequence[Candidate],
        states: Sequence[Any],
        stopped_at: int,
        walk: _Round,
    ) -> Outcome:
        """The outcome of a walk no key resolved in, up to the one at ``stopped_at``.

        When a failure stopped the walk early, the later keys are not called (every call
        would meet the same failure), but the first one resolved in the cache answers: with
        its cached attributes, else its last good copy (stale), and the failure's warnings.
        """
        count = not call.allow_calls
        later = zip(candidates[stopped_at + 1 :], states[stopped_at + 1 :], strict=True)
        for candidate, state in later:
            profile_id = state.get("profile_id") if isinstance(state, dict) else None
            if not isinstance(profile_id, str):
                continue
            self._since_match[call.scope] = 0
            attrs_key = cache_key("attrs", call.scope, "profile_id", profile_id)
            attributes = await self._cache.get(attrs_key, count=count)
            warnings = tuple(walk.warnings)
            if isinstance(attributes, dict):
                return Outcome(
                    profile_id, candidate.key, attributes, "hit", warnings, walk.ran_out_at
                )
            good = await self._last_good(call.scope, profile_id)
            if good is not None:
                warnings += (messages.STALE_LATER_KEY,)
                return Outcome(profile_id, candidate.key, good, "stale", warnings, walk.ran_out_at)
        return walk.unresolved(len(candidates), advise=self._advise(call.scope))

    async def _lookup(
        self, call: _Call, candidate: Candidate, key: str, walk: _Round
    ) -> tuple[Outcome | None, bool]:
        """Look one candidate up; returns (outcome when matched, whether to stop the walk)."""
        breaker = call.breaker
        if not breaker.allow():
            walk.dampened = True
            walk.warnings.append(
                messages.breaker_open(
                    self._settings.breaker_failures, breaker.retry_in(), stale=False
                )
            )
            return None, True
        walk.called = True
        try:
            profile = await call.client.lookup(
                candidate.key, candidate.value, deadline=call.deadline
            )
        except AmperityError as exc:
            stop = self._failed(call, "lookup", exc)
            if self._ran_out(exc, call):
                walk.ran_out_at = call.deadline
            elif not nothing_sent(exc):  # this caller's deadline is not the next caller's
                message = exc.message if isinstance(exc, AmperityRejected) else None
                marker = {"miss": "error", "reason": exc.reason, "message": message, "stop": stop}
                await self._cache.set(key, marker, self._expiry(self._settings.error_ttl))
            walk.warnings.append(messages.partner_error(exc, stale=False))
            return None, stop
        breaker.record_success()
        if profile is None:
            await self._cache.set(
                key, {"miss": "not_found"}, self._expiry(self._settings.not_found_ttl)
            )
            walk.not_found.append(candidate.key)
            self._no_match(call)
            return None, False
        self._since_match[call.scope] = 0
        self._unmatched.pop(call.scope, None)
        await self._cache.set(
            key, {"profile_id": profile.profile_id}, self._expiry(self._settings.resolution_ttl)
        )
        attributes = await self._store_attributes(call.scope, profile)
        return Outcome(profile.profile_id, candidate.key, attributes, "miss"), True

    def _advise(self, scope: str) -> bool:
        """Whether a miss carries the linking-keys advice: never matched, or a long streak."""
        since = self._since_match.get(scope)
        return since is None or since >= UNMATCHED_LOOKUPS_TO_LOG

    def _no_match(self, call: _Call) -> None:
        """Count a lookup answered 404; log the advice once per streak that reaches the mark.

        The streak runs since the scope's last match, or since the process started when it
        has none (then the log says "the first" lookups).
        """
        scope = call.scope
        since = self._since_match.get(scope)
        counts = self._unmatched if since is None else self._since_match
        lookups = counts.get(scope, 0) + 1
        counts[scope] = lookups
        if lookups == UNMATCHED_LOOKUPS_TO_LOG:
            messages.log_always_404(
                self._logger, call.integration_id, lookups, matched_before=since is not None
            )

    async def _refresh(
        self, call: _Call, profile_id: str, candidate: Candidate, walk: _Round
    ) -> Outcome | None:
        """Fetch a resolved profile's attributes; None when the profile no longer exists."""
        breaker = call.breaker
        if not breaker.allow():
            good = await self._last_good(call.scope, profile_id)
            warning = messages.breaker_open(
                self._settings.breaker_failures, breaker.retry_in(), stale=good is not None
            )
            status: CacheStatus = "stale" if good is not None else "dampened"
            return Outcome(profile_id, candidate.key, good, status, (warning,))
        try:
            profile = await call.client.get_profile(profile_id, deadline=call.deadline)
        except AmperityError as exc:
            self._failed(call, "profile", exc)
            if isinstance(exc, AmperityRejected):
                # A 400/401/403 is not an outage, so the breaker never stops it: remembered
                # for error_ttl, or every event of every known visitor would call again.
                refused = failure_entry(exc.reason, exc.message)
                attrs_key = cache_key("attrs", call.scope, "profile_id", profile_id)
                await self._cache.set(attrs_key, refused, self._expiry(self._settings.error_ttl))
            good = await self._last_good(call.scope, profile_id)
            warning = messages.partner_error(exc, stale=good is not None)
            status = "stale" if good is not None else "miss"
            ran_out_at = call.deadline if self._ran_out(exc, call) else None
            return Outcome(profile_id, candidate.key, good, status, (warning,), ran_out_at)
        breaker.record_success()
        walk.called = True
        if profile is None:
            return None
        attributes = await self._store_attributes(call.scope, profile)
        return Outcome(profile_id, candidate.key, attributes, "miss")

    async def _refused(
        self, scope: str, profile_id: str, candidate: Candidate, cached: Any
    ) -> Outcome | None:
        """The outcome for a profile whose attribute refresh was recently refused, else None.

        ``cached`` is what the attribute cache holds for it, fresh attributes aside: a
        refusal is answered with the last good copy and the refusal, without a call.
        """
        failure = read_failure(cached)
        if failure is None:
            return None
        reason, message = failure
        self._dampened.inc()
        good = await self._last_good(scope, profile_id)
        warning = messages.dampened_error(reason, message, stale=good is not None)
        status: CacheStatus = "stale" if good is not None else "dampened"
        return Outcome(profile_id, candidate.key, good, status, (warning,))

    async def _store_attributes(self, scope: str, profile: ProfileLike) -> dict[str, Any]:
        """Cache a profile's attributes (fresh copy and long-lived last good copy)."""
        attributes = dict(profile.attributes)
        pid = profile.profile_id
        settings = self._settings
        await self._cache.set(
            cache_key("attrs", scope, "profile_id", pid),
            attributes,
            self._expiry(settings.attribute_ttl),
        )
        if settings.stale_ttl > 0:
            await self._cache.set(
                cache_key("good", scope, "profile_id", pid),
                attributes,
                self._expiry(settings.attribute_ttl + settings.stale_ttl),
            )
        return attributes

    async def _last_good(self, scope: str, profile_id: str) -> dict[str, Any] | None:
        good = await self._cache.get(cache_key("good", scope, "profile_id", profile_id))
        if not isinstance(good, dict):
            return None
        self._stale.inc()
        return good

    def _ran_out(self, exc: AmperityError, call: _Call) -> bool:
        """Whether the call's deadline, not Amperity, ended a failed call."""
        return ran_out_of_time(exc, call.deadline, max_retries=call.max_retries, now=self._clock())

    def _failed(self, call: _Call, endpoint: str, exc: AmperityError) -> bool:
        """Log a failed call and feed the breaker; returns whether the walk must stop."""
        integration_id, breaker = call.integration_id, call.breaker
        if not (call.posting and exc.reason in HOST_FAILURES):
            messages.log_failure(self._logger, integration_id, endpoint, exc)
        if isinstance(exc, AmperityUnavailable):
            if is_outage(exc) and breaker.record_failure():
                messages.log_breaker_opened(
                    self._logger,
                    integration_id,
                    endpoint,
                    self._settings.breaker_failures,
                    breaker.retry_in(),
                )
            return True
        # Every lookup would meet the same key or host: stop walking the linking keys.
        return isinstance(exc, AmperityAuthError | AmperityMisconfigured)
