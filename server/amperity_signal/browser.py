"""The BrowserProfile use case: the allowlisted attributes a page may see.

Identifiers come only from the server side (the identity map fed by delivered events);
the browser supplies nothing but its anonymous id. Nothing outside
``browser_attribute_allowlist`` leaves (an empty allowlist exposes nothing), and when the
integration names a consent condition (``browser_consent``), a visitor who has not granted
it gets ``{}``: absence of consent counts as "no consent given", as the spec says.

Consent reaches the ledger with every delivered event and, without one, through
``record_consent`` (the gateway's ``POST /v1/consent``): a visitor who withdraws consent
in the page must stop seeing the profile at once, in every tab, not after the next event.
Each state is kept with the instant it was true, and an older one never replaces a newer
one: a retried or late batch of events from before the withdrawal cannot undo it. An
event's state the cache does not take is held in this process until it is written
(``consent_pending``), and read before the stored one meanwhile.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Any

import orjson

from amperity_signal.config import IntegrationSettings
from amperity_signal.consent_pending import FIRST_RETRY_SECONDS, HeldState, PendingConsent
from amperity_signal.enrich import CacheBackend, CacheStore, Enricher, MemoryStore
from amperity_signal.enrich.enricher import Gate
from amperity_signal.enrich.newer_entry import AT
from amperity_signal.errors import CacheUnavailable
from amperity_signal.metrics import Metrics
from amperity_signal.redis_keys import CONSENT_PREFIX

CONSENT_TTL = 30 * 86_400.0
CONSENT_PENDING_WARNING = (
    "consent state pending: the shared cache did not answer, so the consent state this "
    "event carried is not written yet; this process holds it and writes it as soon as the "
    "cache answers, and meanwhile this process shows the visitor's profile to no page "
    "unless this state grants it (other workers and replicas read the older stored state "
    "until it is written). The event itself was delivered; nothing needs sending again."
)
"""Deliver's warning for an event whose consent state is held (``ConsentLedger.remember``)."""
CONSENT_UNKEPT_WARNING = (
    "consent state not kept: the shared cache did not answer, and this process already "
    "holds as many consent states as it may, all of them withdrawals it keeps first; the "
    "visitor's older stored state stays in force until their next event. The event itself "
    "was delivered; nothing needs sending again."
)
"""Deliver's warning for an event whose consent state gave way (``ConsentLedger.remember``)."""


class ConsentLedger:
    """The newest consent state seen per visitor, kept in the shared cache backend.

    Each state is stored with ``at``, the instant it was true: an event's timestamp, or
    when RecordConsent's visitor made the choice (by default when it arrived), in epoch
    seconds beside the consent's own keys (analytics, marketing, functional, categories,
    google), which no ``browser_consent`` condition can name, so a release that does not
    know ``at`` still reads the state. A state
    replaces the stored one only when its ``at`` is not older; a value stored without
    ``at`` (by a release before it existed) is older than any. No instant past the
    ledger's clock is believed: it counts as now, since a page's clock may run ahead and a
    state stored "in the future" would outrank every real change until then. That holds
    for the kept state's ``at`` too, compared against the clock of the replica offering a
    state: another replica's clock may run ahead of this one, or this one's be stepped back
    (NTP), and before session 19 a withdrawal made then was dropped, and answered
    ``profile_allowed: true``, until the clock caught up with the kept grant's ``at``.

    The comparison and the write are one atomic store operation (``CacheStore.keep_newer``:
    on Redis one Lua script, see ``enrich/newer_entry.py``), so of two states for one
    visitor landing at once on two replicas the newer stays, whichever writes last.

    Nothing is written only when the stored state is newer, or is the very same state and
    instant (a retried event). The same state with a newer ``at``, which a consenting
    visitor's every event carries, is written: advancing ``at`` is what lets the newest
    state win against one that arrives late. A visitor withdraws at 10:00, grants at 10:05
    and withdraws again at 10:10; if the 10:10 withdrawal, finding a withdrawal kept,
    left ``at`` at 10:00, the 10:05 grant arriving late (a retried batch, another tab)
    would replace it and the page would see the profile of a visitor who withdrew. So that
    write stays, made as cheap as correctness allows: on Redis the script alone, one round
    trip, with no ``GET`` before it (which would answer only the rare retried or late
    event, and add a round trip to every other); in memory, a call that never yields.

    The backend (``build_cache``) degrades to no cache when Redis is down; a visitor whose
    consent cannot be read then counts as not having consented (``allows`` fails closed).
    A state that cannot be kept is not pretended kept: ``record`` raises
    ``CacheUnavailable`` (RecordConsent answers UNAVAILABLE, the caller retries). An
    event's state cannot be sent again by anyone (the event is delivered), so ``remember``
    holds it (``consent_pending.PendingConsent``) and it is written once the cache answers;
    until then a held state is read before the stored one (``gate``, ``allows``), so an
    older stored grant does not show the profile of a visitor who withdrew. The next write
    for that visitor writes the held state in place of an older offered one.

    Args:
        store: The shared cache backend.
        ttl: Seconds a visitor's state is kept after it was last written.
        now: The wall clock, in epoch seconds.
        metrics: The held states' gauge and counter (None: not counted).
        first_retry: Seconds before the held states' first timed try (``PendingConsent``);
            the cache answering another call tries them at once whatever it is.
    """

    def __init__(
        self,
        store: CacheStore,
        ttl: float = CONSENT_TTL,
        *,
        now: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
        first_retry: float = FIRST_RETRY_SECONDS,
    ) -> None:
        self._store = store
        self._ttl = ttl
        self._now = now
        self._pending = PendingConsent(self._write_held, metrics=metrics, first_retry=first_retry)
        if isinstance(store, CacheBackend):  # the cache answers again: held states go now
            store.on_available(self._pending.answered)
        # The memory store answers at once and cannot fail: keeping a state in it directly
        # spares the backend's and the store's coroutines (as ``JsonCache`` reads it).
        # Exactly MemoryStore: a subclass may override get or set, as the outage tests do.
        memory = store.store if isinstance(store, CacheBackend) else store
        self._keep_now = memory.keep_newer_now if type(memory) is MemoryStore else None

    async def remember(
        self, integration_id: str, event: dict[str, Any], condition: str | None = None
    ) -> tuple[str, ...]:
        """Keep the consent state an event carried, as of its timestamp, when it is newest.

        During a cache outage the state is held and written once the cache answers (the
        event is delivered all the same); meanwhile the visitor's profile is shown only
        when the held state grants ``condition`` (the integration's ``browser_consent``;
        None: not known, and the state is among the last to give way when the hold is
        full, as a denial is).

        Returns:
            Deliver's warnings: ``CONSENT_PENDING_WARNING`` when the state is held,
            ``CONSENT_UNKEPT_WARNING`` when the hold is full of denials and it gave way.
        """
        consent = event.get("context", {}).get("consent")
        anonymous_id = event.get("anonymous_id")
        if isinstance(consent, dict) and isinstance(anonymous_id, str) and anonymous_id:
            # Deliver always sets the timestamp (the receive time when the event had none).
            timestamp = event.get("timestamp")
            at = timestamp.timestamp() if isinstance(timestamp, datetime) else None
            key = self._key(integration_id, anonymous_id)
            now, moment = self._moment(at)
            value = orjson.dumps({**consent, AT: moment})
            try:
                await self._write(key, value, moment, now)
            except CacheUnavailable:
                denies = condition is None or not meets(consent, condition)
                if self._pending.hold(key, HeldState(value, moment, denies)):
                    return (CONSENT_PENDING_WARNING,)
                return (CONSENT_UNKEPT_WARNING,)
        return ()

    async def record(
        self,
        integration_id: str,
        anonymous_id: str,
        consent: dict[str, Any],
        at: datetime | None = None,
    ) -> dict[str, Any]:
        """Keep ``consent`` as the visitor's whole consent state as of ``at`` (None: now).

        Returns:
            The state kept now: ``consent``, or a newer one already kept.

        Raises:
            CacheUnavailable: The cache did not answer: ``consent`` is not known to be kept
                (after a timeout the write may have landed), and ``allows`` answers no
                until it is back. Sending the same state again later is safe.
        """
        moment = None if at is None else at.timestamp()
        key = self._key(integration_id, anonymous_id)
        try:
            return await self._keep(key, consent, moment)
        except CacheUnavailable as error:
            raise CacheUnavailable(
                "consent not recorded: the consent ledger's store (the shared cache) did not "
                "answer, so this state is not known to be kept and the visitor's profile "
                "stays hidden meanwhile; send the same state again in "
                f"{error.metadata['retry_after_seconds']} s (sending it twice is harmless)",
                retry_after=error.retry_after,
                metadata=error.metadata,
            ) from None

    async def allows(self, integration_id: str, anonymous_id: str, condition: str) -> bool:
        """Whether the visitor's newest known consent meets ``condition``.

        ``condition`` is ``analytics``, ``marketing``, ``functional``, ``categories.CODE``
        or ``google.PARAMETER``; the value must be true (or ``"granted"``). The stored
        ``at`` is never one of those, so the stored value is read as it is. A held state
        (not written yet) must meet it too.
        """
        key = self._key(integration_id, anonymous_id)
        return self._admits(key, condition, await self._store.get(key))

    def gate(self, integration_id: str, anonymous_id: str, condition: str) -> Gate:
        """``allows`` as the enricher's ``Gate``: read with the page's first read on Redis.

        The enricher reads it from its own cache, which must be this ledger's store (as
        ``build_server`` wires them). The held state is looked at each time the gate is
        (before the page's reads and again after a Profile API call), so a withdrawal held
        meanwhile hides the answer too.
        """
        key = self._key(integration_id, anonymous_id)
        return Gate(key, partial(self._admits, key, condition))

    async def close(self, deadline: float) -> int:
        """At a stop: try the held states once, by ``deadline``; how many are left.

        ``deadline`` is on the event loop's clock (``PendingConsent.close``).
        """
        return await self._pending.close(deadline)

    def _admits(self, key: str, condition: str, stored: bytes | None) -> bool:
        """Whether the held state, if any, and the stored one both grant ``condition``."""
        held = self._pending.get(key)
        if held is not None and not grants(condition, held.value):
            return False
        return grants(condition, stored)

    async def _keep(self, key: str, consent: dict[str, Any], at: float | None) -> dict[str, Any]:
        """Store ``consent`` as of ``at`` unless the stored state is newer; the state kept."""
        now, moment = self._moment(at)
        newer = await self._write(key, orjson.dumps({**consent, AT: moment}), moment, now)
        kept = _parsed(newer) if newer is not None else None
        if kept is None:
            return consent
        kept.pop(AT, None)  # the caller gets the consent state alone
        return kept

    def _moment(self, at: float | None) -> tuple[float, float]:
        """The clock now, and ``at`` as kept: now when unset or past the clock."""
        now = self._now()
        return now, now if at is None or at > now else at

    async def _write(self, key: str, value: bytes, at: float, now: float) -> bytes | None:
        """Store ``value`` as of ``at`` unless a newer state is; the newer one, else None.

        A held state newer than ``value`` (the cache did not take it) goes in its place,
        and is answered as the state in force: ``value`` would lose to it once written.
        """
        held = self._pending.get(key)
        substituted = held is not None and held.at > at
        if held is not None and substituted:
            value, at = held.value, held.at
        keep_now = self._keep_now
        if keep_now is not None:
            newer = keep_now(key, value, at, self._ttl, now=now)
        else:
            newer = await self._store.keep_newer(key, value, at, self._ttl, now=now)
        if held is not None:
            self._pending.settled(key, held, at)
        return value if newer is None and substituted else newer

    async def _write_held(self, key: str, state: HeldState) -> None:
        """Write a held state: the retry loop's write (``CacheUnavailable`` while down)."""
        await self._store.keep_newer(key, state.value, state.at, self._ttl, now=self._now())

    @staticmethod
    def _key(integration_id: str, anonymous_id: str) -> str:
        digest = hashlib.sha256(f"{integration_id}\0{anonymous_id}".encode()).hexdigest()
        return f"{CONSENT_PREFIX}{digest}"


def _parsed(stored: bytes) -> dict[str, Any] | None:
    """A stored state, or None when it is not one (it is then replaced)."""
    try:
        value = orjson.loads(stored)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def grants(condition: str, stored: bytes | None) -> bool:
    """Whether a stored state (None: none, or unreadable) meets ``condition`` (``allows``)."""
    return meets(_parsed(stored) if stored else None, condition)


def meets(consent: Any, condition: str) -> bool:
    """Whether a consent state (the nested shape events carry) grants ``condition``."""
    if not isinstance(consent, dict):
        return False
    value: Any = consent
    for part in condition.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value is True or value == "granted"


class BrowserProfiles:
    """Answers BrowserProfile from the enricher, filtered for the page."""

    def __init__(self, enricher: Enricher, consent: ConsentLedger) -> None:
        self._enricher = enricher
        self._consent = consent

    async def attributes(
        self, integration: IntegrationSettings, anonymous_id: str, *, deadline: float
    ) -> dict[str, Any]:
        """The allowlisted attributes for the visitor; ``{}`` for first-touch visitors."""
        allowlist = integration.browser_attribute_allowlist
        if not anonymous_id or not allowlist or not integration.profile_enabled:
            return {}
        condition = integration.browser_consent
        # The visitor's consent is read with the page's first read (fails closed: ``{}``).
        gate = self._consent.gate(integration.id, anonymous_id, condition) if condition else None
        attributes, personalized = await self._enricher.browser_attributes(
            integration, anonymous_id, deadline=deadline, gate=gate
        )
        allowed: dict[str, Any] = {}
        for name in allowlist:  # a personalised value wins over the profile's own
            if name in personalized:
                allowed[name] = personalized[name]
            elif name in attributes:
                allowed[name] = attributes[name]
        return allowed

    async def record_consent(
        self,
        integration: IntegrationSettings,
        anonymous_id: str,
        consent: dict[str, Any],
        consented_at: datetime | None = None,
    ) -> bool:
        """Keep the visitor's consent state, without an event.

        Args:
            integration: The page's integration.
            anonymous_id: The visitor.
            consent: The visitor's whole consent state.
            consented_at: When the visitor made this choice; None means now.

        Returns:
            Whether the page may see the visitor's profile under the state now kept (this
            one, or a newer one already kept): false when the integration's
            ``browser_consent`` condition is not met, so the page stops asking. Nothing is
            kept when the integration names no condition, as ``Delivery`` keeps nothing
            then either.

        Raises:
            CacheUnavailable: The state could not be kept (see ``ConsentLedger.record``).
        """
        condition = integration.browser_consent
        if not condition:
            return True
        kept = await self._consent.record(integration.id, anonymous_id, consent, consented_at)
        return meets(kept, condition)
