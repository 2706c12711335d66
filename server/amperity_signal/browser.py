"""The BrowserProfile use case: the allowlisted attributes a page may see.

Identifiers come only from the server side (the identity map fed by delivered events);
the browser supplies nothing but its anonymous id. Nothing outside
``browser_attribute_allowlist`` leaves (an empty allowlist exposes nothing), and when the
integration names a consent condition (``browser_consent``), a visitor who has not granted
it gets ``{}``: absence of consent counts as "no consent given", as the spec says.

Consent reaches the ledger with every delivered event and, without one, through
``record_consent`` (the gateway's ``POST /v1/consent``): a visitor who withdraws consent
in the page must stop seeing the profile at once, in every tab, not after the next event.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from amperity_signal.config import IntegrationSettings
from amperity_signal.enrich import CacheStore, Enricher

CONSENT_TTL = 30 * 86_400.0


class ConsentLedger:
    """The last consent state seen per visitor, kept in the shared cache backend.

    The backend (``build_cache``) degrades to no cache when Redis is down; a visitor whose
    consent cannot be read then counts as not having consented.
    """

    def __init__(self, store: CacheStore, ttl: float = CONSENT_TTL) -> None:
        self._store = store
        self._ttl = ttl

    async def remember(self, integration_id: str, event: dict[str, Any]) -> None:
        """Keep the consent state an event carried, when it carried one."""
        consent = event.get("context", {}).get("consent")
        anonymous_id = event.get("anonymous_id")
        if isinstance(consent, dict) and isinstance(anonymous_id, str) and anonymous_id:
            value = orjson.dumps(consent)  # as record() does, without a coroutine per event
            await self._store.set(self._key(integration_id, anonymous_id), value, self._ttl)

    async def record(self, integration_id: str, anonymous_id: str, consent: dict[str, Any]) -> None:
        """Keep ``consent`` as the visitor's whole consent state, replacing the last one."""
        value = orjson.dumps(consent)
        await self._store.set(self._key(integration_id, anonymous_id), value, self._ttl)

    async def allows(self, integration_id: str, anonymous_id: str, condition: str) -> bool:
        """Whether the visitor's last known consent meets ``condition``.

        ``condition`` is ``analytics``, ``marketing``, ``functional``, ``categories.CODE``
        or ``google.PARAMETER``; the value must be true (or ``"granted"``).
        """
        stored = await self._store.get(self._key(integration_id, anonymous_id))
        return meets(orjson.loads(stored) if stored else None, condition)

    @staticmethod
    def _key(integration_id: str, anonymous_id: str) -> str:
        digest = hashlib.sha256(f"{integration_id}\0{anonymous_id}".encode()).hexdigest()
        return f"consent:{digest}"


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
        if condition and not await self._consent.allows(integration.id, anonymous_id, condition):
            return {}
        attributes, personalized = await self._enricher.browser_attributes(
            integration, anonymous_id, deadline=deadline
        )
        merged = {**attributes, **personalized}
        return {name: merged[name] for name in allowlist if name in merged}

    async def record_consent(
        self, integration: IntegrationSettings, anonymous_id: str, consent: dict[str, Any]
    ) -> bool:
        """Keep the visitor's consent state now, without an event.

        Returns:
            Whether the page may see the visitor's profile under this consent: false when
            the integration's ``browser_consent`` condition is not met, so the page stops
            asking. Nothing is kept when the integration names no condition, as
            ``Delivery`` keeps nothing then either.
        """
        condition = integration.browser_consent
        if not condition:
            return True
        await self._consent.record(integration.id, anonymous_id, consent)
        return meets(consent, condition)
