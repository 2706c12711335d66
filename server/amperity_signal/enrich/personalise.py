"""Context-sensitive personalisation: context values from the event, one cached call per context.

Each ``{source, target}`` mapping reads ``source`` from the event (the blueprint's path
syntax: ``context.*``, ``properties.*``, ``partner_attrs.amperity.*``, flat fields) and sends
it as the ``target`` parameter of ``get_profile``. Results are cached by profile id plus a
digest of the sorted context for ``personalized_ttl``, so the same context costs one call;
a failed call is remembered for ``error_ttl``, as a failed lookup is.

The browser never sends context: it is shown the profile's latest personalised result, the
``perslast`` entry, which is the result of the context the visitor was last *in*, whether
fetched or found cached. A fetch writes it beside the ``pers`` entry (same TTL); a ``pers``
hit copies its entry over it (``JsonCache.get_as_latest``) for the entry's remaining life,
so ``perslast`` never outlives the result it holds. Until session 23 only a fetch wrote it:
shoes (fetched), bags (fetched), shoes again (a hit) left the browser showing bags. A cached
failure is never copied (the browser keeps the last result), and a Redis outage costs the
hit nothing (it answers as a miss, as every read does, and nothing is copied). Under
concurrent events of one profile (two workers, two tabs) the last write wins. Reading
``perslast`` stays behind the browser's consent gate; writing it discloses nothing.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import orjson

from amperity_signal.blueprint import resolve_path
from amperity_signal.config import ContextMapping
from amperity_signal.enrich import messages
from amperity_signal.enrich.breaker import Breaker, is_outage, nothing_sent, ran_out_of_time
from amperity_signal.enrich.codec import JsonCache, failure_entry, read_failure
from amperity_signal.enrich.keys import cache_key, context_digest, rekind
from amperity_signal.enrich.ports import ProfileClient
from amperity_signal.enrich.single_flight import SingleFlight
from amperity_signal.errors import AmperityError, AmperityRejected


def _parameter(value: Any) -> str | None:
    """A context value as a query parameter, or None when it is empty.

    Event numbers come from protobuf Structs, so they are floats: an integral one is sent
    without its ``.0`` (``cartValue=120``, as the blueprint renders it), not ``120.0``.
    A list or object is sent as compact JSON.
    """
    if value is None or (isinstance(value, str | list | tuple | dict) and not value):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, list | tuple | dict):
        # JSON, keys sorted (a stable context hash), integral numbers without ".0" - never
        # Python's repr (['shoes'], {'gift': True}), which nothing on Amperity's side parses.
        return orjson.dumps(_integral(value), option=orjson.OPT_SORT_KEYS).decode()
    text = str(value).strip()
    return text or None


_EXACT_INTEGERS: Final = 2**53
"""Floats below this magnitude are integers exactly (the servicer's conversion bound too)."""


def _integral(value: Any) -> Any:
    """``value`` with integral floats (Struct numbers) as ints, at any depth.

    Only below ``_EXACT_INTEGERS``: a larger one (``1e30``) stays a float, which JSON writes
    as ``1e+30``; as an int it was past the 64 bits orjson writes, and the ``TypeError`` failed
    the whole Deliver or Enrich (``INTERNAL``) of an event carrying it in a mapped list.
    """
    if isinstance(value, float) and value.is_integer() and abs(value) < _EXACT_INTEGERS:
        return int(value)
    if isinstance(value, list | tuple):
        return [_integral(item) for item in value]
    if isinstance(value, dict):
        return {key: _integral(item) for key, item in value.items()}
    return value


def context_for(mappings: Sequence[ContextMapping], event: Mapping[str, Any]) -> dict[str, str]:
    """The context parameters an event yields, skipping empty values."""
    context: dict[str, str] = {}
    for mapping in mappings:
        value = _parameter(resolve_path(event, mapping.source))
        if value is not None:
            context[mapping.target] = value
    return context


class Personaliser:
    """Fetches and caches personalised attributes.

    Args:
        ttl: Seconds a personalised result is reused (``personalized_ttl``).
        cache: The cache backend.
        flights: Shared single flight, so concurrent equal contexts make one call.
        expiry: Applies jitter to a TTL.
        failures_to_open: ``breaker_failures``, for the warning text.
        logger: Where ``partner resolve failed`` is logged.
        error_ttl: Seconds a failed call is remembered for its context (``error_ttl``).
        clock: Monotonic seconds, the clock deadlines are expressed in.
    """

    def __init__(
        self,
        *,
        ttl: float,
        error_ttl: float,
        cache: JsonCache,
        flights: SingleFlight[Any],
        expiry: Callable[[float], float],
        failures_to_open: int,
        logger: logging.Logger,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._ttl = ttl
        self._error_ttl = error_ttl
        self._cache = cache
        self._flights = flights
        self._expiry = expiry
        self._failures_to_open = failures_to_open
        self._logger = logger

    async def latest(
        self, scope: str, profile_id: str, *, attributes_key: str | None = None
    ) -> dict[str, Any]:
        """The most recent personalised attributes of a profile (for the browser), or {}.

        ``scope`` is the integration's ``profile_scope``; ``attributes_key`` the profile's
        ``attrs`` key when the caller has it, whose digest names this entry too (one
        SHA-256 less per page).
        """
        found = await self._cache.get(_latest_key(scope, profile_id, attributes_key))
        return found if isinstance(found, dict) else {}

    async def personalised(
        self,
        integration_id: str,
        profile_id: str,
        context: Mapping[str, str],
        *,
        scope: str,
        client: ProfileClient,
        breaker: Breaker,
        deadline: float | None,
        max_retries: int,
        attributes_key: str | None = None,
    ) -> tuple[dict[str, Any], tuple[str, ...]]:
        """Personalised attributes for a profile in a context, and any warnings.

        The answer, fetched or cached, becomes the profile's latest (see the module
        docstring). ``scope`` is the integration's ``profile_scope``; ``max_retries`` the
        integration's, to tell retries running out from the deadline cutting them short;
        ``attributes_key`` as for ``latest``.
        """
        key = cache_key("pers", scope, profile_id, context_digest(context))
        if attributes_key is not None:  # a hit's: no SHA-256 (inline: every hit makes it)
            latest = rekind(attributes_key, "perslast")
        else:
            latest = cache_key("perslast", scope, "profile_id", profile_id)
        cached = await self._cache.get_as_latest(key, latest)
        if isinstance(cached, dict):
            return cached, ()
        failure = read_failure(cached)
        if failure is not None:
            return {}, (messages.dampened_error(*failure, stale=False),)

        async def fetch() -> _Fetched:
            if not breaker.allow():
                retry_in = breaker.retry_in()
                return (
                    {},
                    (messages.breaker_open(self._failures_to_open, retry_in, stale=False),),
                    None,
                )
            try:
                profile = await client.get_profile(
                    profile_id, context=dict(context), deadline=deadline
                )
            except AmperityError as exc:
                messages.log_failure(self._logger, integration_id, "personalised", exc)
                if is_outage(exc) and breaker.record_failure():
                    messages.log_breaker_opened(
                        self._logger,
                        integration_id,
                        "personalised",
                        self._failures_to_open,
                        breaker.retry_in(),
                    )
                warning = messages.partner_error(exc, stale=False)
                if ran_out_of_time(exc, deadline, max_retries=max_retries, now=self._clock()):
                    return {}, (warning,), deadline  # a joiner with more time calls again
                if not nothing_sent(exc):
                    # Remembered like a failed lookup, so a context Amperity refuses costs one
                    # call per error_ttl, not one per event (the tenant's rate limit is shared
                    # with event ingest).
                    message = exc.message if isinstance(exc, AmperityRejected) else None
                    entry = failure_entry(exc.reason, message)
                    await self._cache.set(key, entry, self._expiry(self._error_ttl))
                return {}, (warning,), None
            breaker.record_success()
            attributes = dict(profile.attributes) if profile is not None else {}
            ttl = self._expiry(self._ttl)
            await self._cache.set(key, attributes, ttl)
            await self._cache.set(latest, attributes, ttl)
            return attributes, (), None

        def late() -> _Fetched:
            return {}, (messages.SHARED_CALL_LATE,), deadline

        fetched: _Fetched = await self._flights.run_within(
            (integration_id, "pers", key),
            fetch,
            deadline=deadline,
            ran_out_at=_ran_out_at,
            late=late,
        )
        return fetched[0], fetched[1]


def _latest_key(scope: str, profile_id: str, attributes_key: str | None) -> str:
    """The profile's ``perslast`` key: from its ``attrs`` key's digest when given (no SHA-256)."""
    if attributes_key is not None:
        return rekind(attributes_key, "perslast")
    return cache_key("perslast", scope, "profile_id", profile_id)


_Fetched = tuple[dict[str, Any], tuple[str, ...], float | None]
"""A personalised call's attributes, warnings, and the deadline it ran out of time against."""


def _ran_out_at(fetched: _Fetched) -> float | None:
    return fetched[2]
