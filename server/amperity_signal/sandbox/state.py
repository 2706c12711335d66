"""The sandbox's live state, built from a :class:`SandboxData` and rebuilt on reset."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Mapping
from typing import Any

from amperity_signal.sandbox.data import SandboxData, Tenant
from amperity_signal.sandbox.faults import FaultInjector, Holds
from amperity_signal.sandbox.profiles import CollectionProfiles
from amperity_signal.sandbox.ratelimit import SlidingWindowLimiter
from amperity_signal.sandbox.records import EventRecord, RequestRecord, RingLog, Stats

REQUEST_LOG_CAPACITY = 20_000
EVENT_LOG_CAPACITY = 20_000


class SandboxState:
    """Profiles, pending profile updates, logs, counters, faults, holds and the rate limiter.

    Everything runs on one event loop, so no locks are needed. Profile updates of accepted
    events wait ``profile_delay`` seconds of loop time (``call_later``) unless flushed;
    timestamps come from ``clock``.
    """

    def __init__(
        self,
        data: SandboxData,
        *,
        clock: Callable[[], float],
        profile_delay: float,
        rate_limit_per_second: int,
        seed: int | None,
    ) -> None:
        self.data = data
        self.clock = clock
        self.profile_delay = profile_delay
        self._seed = seed
        self.rng = random.Random(seed)  # noqa: S311 - simulation draws, not cryptography
        self.limiter = SlidingWindowLimiter(rate_limit_per_second)
        self.faults = FaultInjector(self.rng)
        self.holds = Holds()
        self.requests: RingLog[RequestRecord] = RingLog(REQUEST_LOG_CAPACITY)
        # The requests arrived (their body whole) and not yet journaled, by request id:
        # what a test waits on to know its calls are at the sandbox, a hold or latency
        # keeping them. A reset leaves them: they are still in flight, and go when done.
        self.in_flight: dict[str, RequestRecord] = {}
        self.events: RingLog[EventRecord] = RingLog(EVENT_LOG_CAPACITY)
        self.stats = Stats()
        self._collections: dict[str, dict[str, CollectionProfiles]] = {}
        self._pending: dict[int, tuple[str, Mapping[str, Any]]] = {}
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._next_update = 0
        self._build_collections()

    def tenant(self, tenant_id: str | None) -> Tenant | None:
        """A tenant by id, or None when the sandbox has no such tenant."""
        return None if tenant_id is None else self.data.tenants.get(tenant_id)

    def collection(self, tenant_id: str, collection_id: str) -> CollectionProfiles | None:
        """The live profiles of one of a tenant's collections."""
        return self._collections.get(tenant_id, {}).get(collection_id)

    def all_collections(self) -> list[tuple[str, CollectionProfiles]]:
        """Every ``(tenant_id, collection)`` pair."""
        return [(t, c) for t, by_id in self._collections.items() for c in by_id.values()]

    def new_hex(self, digits: int) -> str:
        """Random lowercase hex from the seeded generator (ids that tests can reproduce)."""
        return f"{self.rng.getrandbits(digits * 4):0{digits}x}"

    def accept_event(self, tenant_id: str, event: Mapping[str, Any]) -> None:
        """Schedules an accepted, routed event to update the tenant's collections."""
        self._next_update += 1
        update_id = self._next_update
        self._pending[update_id] = (tenant_id, event)
        if self.profile_delay <= 0:
            self._apply_through(update_id)
            return
        loop = asyncio.get_running_loop()
        self._timers[update_id] = loop.call_later(
            self.profile_delay, self._apply_through, update_id
        )

    def flush(self) -> int:
        """Applies every pending profile update now; returns how many there were."""
        return self._apply_through(self._next_update)

    def pending_updates(self) -> int:
        """How many accepted events still wait to reach the profiles."""
        return len(self._pending)

    def reset(self) -> None:
        """Back to the data file's state: profiles, logs, counters, faults, rate limiter.

        The requests a ``hold`` fault keeps are released: with the fault gone, nothing
        would.
        """
        self.close()
        self.holds.release()
        self._pending.clear()
        self.requests.clear()
        self.events.clear()
        self.stats = Stats()
        self.faults.clear()
        self.limiter.reset()
        self.rng.seed(self._seed)
        self._build_collections()

    def close(self) -> None:
        """Cancels the timers of pending updates (they stay pending until flushed)."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    def _apply_through(self, last_update_id: int) -> int:
        """Applies pending updates up to ``last_update_id`` in arrival order."""
        due = sorted(update_id for update_id in self._pending if update_id <= last_update_id)
        now = self.clock()
        for update_id in due:
            tenant_id, event = self._pending.pop(update_id)
            timer = self._timers.pop(update_id, None)
            if timer is not None:
                timer.cancel()
            for collection in self._collections.get(tenant_id, {}).values():
                collection.apply(event, now)
        return len(due)

    def _build_collections(self) -> None:
        self._collections = {
            tenant.tenant_id: {
                collection_id: CollectionProfiles(
                    collection, new_profile_id=lambda: f"p-{self.new_hex(12)}"
                )
                for collection_id, collection in tenant.collections.items()
            }
            for tenant in self.data.tenants.values()
        }
