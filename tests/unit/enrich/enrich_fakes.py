"""Test fakes for the enrichment tests: a fake clock, a counting Profile API client, settings."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from amperity_signal.config import IntegrationSettings
from amperity_signal.enrich import Enricher
from amperity_signal.errors import AmperityError, AmperityUnavailable

EnricherFactory = Callable[..., Enricher]
"""The ``make_enricher`` fixture: builds an Enricher, keyword arguments override its wiring."""


class FakeClock:
    """Monotonic seconds that move only when a test says so."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass(frozen=True)
class FakeProfile:
    """Structurally the amperity client's ``Profile`` (the fields enrichment reads)."""

    profile_id: str
    attributes: dict[str, Any]
    collection_id: str = "apc-test"
    links: dict[str, Any] = field(default_factory=dict)
    updated_at: str | None = None


class FakeProfileClient:
    """A Profile API that counts its calls; profiles are registered per linking key value.

    Attributes:
        lookups: Every ``lookup`` call as ``(key, value)``.
        gets: Every ``get_profile`` call as ``(profile_id, context)``.
        error: When set, every call raises it.
        gate: When set, calls wait for it (to hold concurrent callers in flight).
        personalise: Builds personalised attributes from a profile id and its context.
        clock: When set, a call whose deadline passed while it waited fails as the real
            client's does: ``AmperityUnavailable`` after ``late_attempts`` attempts (0:
            nothing was sent; 1: the one attempt's timeout was cut short by the deadline).
    """

    def __init__(self) -> None:
        self.by_key: dict[tuple[str, str], str] = {}
        self.profiles: dict[str, dict[str, Any]] = {}
        self.lookups: list[tuple[str, str]] = []
        self.gets: list[tuple[str, dict[str, str] | None]] = []
        self.error: AmperityError | None = None
        self.gate: asyncio.Event | None = None
        self.clock: Callable[[], float] | None = None
        self.late_attempts = 0
        self.personalise: Callable[[str, Mapping[str, str]], dict[str, Any]] = lambda _p, ctx: {
            "Offer": f"{ctx.get('pageCategory', 'none')}-promo"
        }

    def add(self, profile_id: str, attributes: dict[str, Any], **keys: str) -> None:
        """Register a profile and the linking key values that resolve to it."""
        self.profiles[profile_id] = attributes
        for key, value in keys.items():
            self.by_key[(key, value)] = profile_id

    @property
    def personalised_gets(self) -> list[tuple[str, dict[str, str] | None]]:
        return [call for call in self.gets if call[1] is not None]

    @property
    def plain_gets(self) -> list[tuple[str, dict[str, str] | None]]:
        return [call for call in self.gets if call[1] is None]

    async def _enter(self, deadline: float | None) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if self.clock is not None and deadline is not None and self.clock() >= deadline:
            raise AmperityUnavailable(
                "the call's deadline passed",
                reason="AMPERITY_UNAVAILABLE",
                attempts=self.late_attempts,
            )
        if self.error is not None:
            raise self.error

    async def lookup(self, key: str, value: str, *, deadline: float | None) -> FakeProfile | None:
        self.lookups.append((key, value))
        await self._enter(deadline)
        profile_id = self.by_key.get((key, value))
        if profile_id is None:
            return None
        return FakeProfile(profile_id, dict(self.profiles[profile_id]))

    async def get_profile(
        self,
        profile_id: str,
        *,
        context: Mapping[str, str] | None = None,
        deadline: float | None,
    ) -> FakeProfile | None:
        self.gets.append((profile_id, dict(context) if context is not None else None))
        await self._enter(deadline)
        if profile_id not in self.profiles:
            return None
        if context is not None:
            return FakeProfile(profile_id, self.personalise(profile_id, context))
        return FakeProfile(profile_id, dict(self.profiles[profile_id]))


DEFAULT_LINKING_KEYS: list[dict[str, Any]] = [
    {"source": "email", "key": "email_sha256", "hash": "sha256"},
    {"source": "canonical_id", "key": "device_cookie"},
    {"source": "user_id", "key": "customer_id"},
]


def integration(**overrides: Any) -> IntegrationSettings:
    """An integration with Profile API creds and the spec's example linking keys."""
    fields: dict[str, Any] = {
        "id": "acme",
        "pipeline_key": "pk-acme",
        "tenant_subdomain": "acme",
        "tenant_id": "acme",
        "api_key": "ingest-jwt",
        "event_stream_id": "esm-2VP6va3Zn",
        "source_value": "DATAFLY",
        "profile_api_key": "profile-jwt",
        "profile_collection_id": "apc-vPsQheAm",
        "linking_keys": DEFAULT_LINKING_KEYS,
    }
    fields.update(overrides)
    return IntegrationSettings.model_validate(fields)


def event(anonymous_id: str = "anon_abc123", **fields: Any) -> dict[str, Any]:
    """An event dict as the servicer builds it."""
    built: dict[str, Any] = {
        "message_id": "msg-1",
        "type": "track",
        "event": "view_item",
        "anonymous_id": anonymous_id,
        "canonical_id": anonymous_id,
        "properties": {},
        "traits": {},
        "context": {},
    }
    built.update(fields)
    return built
