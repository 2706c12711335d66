"""The consent ledger keeps the newest consent state per visitor, by when it was true."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from amperity_signal.browser import ConsentLedger, meets
from amperity_signal.enrich import CacheBackend, MemoryStore
from amperity_signal.metrics import Metrics
from tests.unit.enrich.enrich_fakes import FakeClock

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
GRANTED = {"functional": True, "marketing": True}
WITHDRAWN = {"functional": False, "marketing": True}


@pytest.fixture
def store() -> MemoryStore:
    """The memory backend the ledger writes to."""
    return MemoryStore(100)


@pytest.fixture
def ledger(store: MemoryStore) -> ConsentLedger:
    """A ledger whose clock reads ``NOW``."""
    return ConsentLedger(store, now=FakeClock(NOW.timestamp()))


def delivered(consent: dict[str, Any], timestamp: datetime) -> dict[str, Any]:
    """An event as Deliver hands it to the ledger (its timestamp already a datetime)."""
    return {
        "type": "track",
        "anonymous_id": "anon-1",
        "timestamp": timestamp,
        "context": {"consent": consent},
    }


async def test_an_event_from_before_a_recorded_withdrawal_does_not_undo_it(
    ledger: ConsentLedger,
) -> None:
    """A late or retried event granting consent, older than the withdrawal, is ignored."""
    await ledger.record("web", "anon-1", WITHDRAWN)  # unset consented_at: now
    await ledger.remember("web", delivered(GRANTED, NOW - timedelta(minutes=1)))
    assert not await ledger.allows("web", "anon-1", "functional")


async def test_an_event_newer_than_the_recorded_state_replaces_it(ledger: ConsentLedger) -> None:
    """A grant carried by an event after the withdrawal wins, as it is the visitor's latest."""
    await ledger.record("web", "anon-1", WITHDRAWN, NOW - timedelta(minutes=2))
    await ledger.remember("web", delivered(GRANTED, NOW - timedelta(minutes=1)))
    assert await ledger.allows("web", "anon-1", "functional")


async def test_a_state_as_old_as_the_kept_one_replaces_it(ledger: ConsentLedger) -> None:
    """Not older is enough: of two states of the same instant the later arrival is kept."""
    await ledger.record("web", "anon-1", GRANTED, NOW - timedelta(minutes=1))
    await ledger.remember("web", delivered(WITHDRAWN, NOW - timedelta(minutes=1)))
    assert not await ledger.allows("web", "anon-1", "functional")


async def test_an_older_record_answers_with_the_newer_state_already_kept(
    ledger: ConsentLedger,
) -> None:
    """record() returns the state in force, so profile_allowed says what BrowserProfile does."""
    await ledger.remember("web", delivered(WITHDRAWN, NOW - timedelta(seconds=10)))
    kept = await ledger.record("web", "anon-1", GRANTED, NOW - timedelta(minutes=5))
    assert kept == WITHDRAWN
    assert not await ledger.allows("web", "anon-1", "functional")


async def test_a_timestamp_ahead_of_the_clock_counts_as_now(ledger: ConsentLedger) -> None:
    """A page clock an hour fast cannot pin its grant: a withdrawal made now still wins."""
    await ledger.remember("web", delivered(GRANTED, NOW + timedelta(hours=1)))
    await ledger.record("web", "anon-1", WITHDRAWN)
    assert not await ledger.allows("web", "anon-1", "functional")


async def test_a_withdrawal_after_the_clock_was_stepped_back_still_wins(store: MemoryStore) -> None:
    """A grant stamped before NTP stepped the clock back an hour does not outrank a withdrawal.

    Its ``at`` is past the clock now, so it counts as now, as an offered one would (the same
    with a replica whose clock runs ahead). Before: the withdrawal was dropped, answered
    with the grant, for an hour.
    """
    clock = FakeClock(NOW.timestamp())
    ledger = ConsentLedger(store, now=clock)
    await ledger.record("web", "anon-1", GRANTED)
    clock.advance(-3600)
    assert await ledger.record("web", "anon-1", WITHDRAWN) == WITHDRAWN
    assert not await ledger.allows("web", "anon-1", "functional")


async def test_a_state_stored_without_at_by_the_previous_version_reads_and_is_replaced(
    ledger: ConsentLedger, store: MemoryStore
) -> None:
    """A value written before ``at`` existed reads as it did and yields to any new state."""
    await ledger.record("web", "anon-1", WITHDRAWN)
    (key,) = store.keys()
    await store.set(key, orjson.dumps(GRANTED), ttl=60)  # the previous version's format
    assert await ledger.allows("web", "anon-1", "functional")

    await ledger.remember("web", delivered(WITHDRAWN, datetime(2001, 1, 1, tzinfo=UTC)))
    assert not await ledger.allows("web", "anon-1", "functional")


async def test_the_previous_version_still_reads_what_this_one_stores(
    ledger: ConsentLedger, store: MemoryStore
) -> None:
    """``at`` sits beside the consent keys, so a replica not yet upgraded reads the state."""
    await ledger.record("web", "anon-1", GRANTED)
    (key,) = store.keys()
    stored = await store.get(key)
    assert stored is not None
    assert meets(orjson.loads(stored), "functional")  # the previous version's read
    assert orjson.loads(stored)["at"] == NOW.timestamp()


async def test_the_same_state_again_advances_at_so_a_late_older_change_cannot_win(
    ledger: ConsentLedger,
) -> None:
    """Withdrawn at 10:00, granted 10:05, withdrawn 10:10: the 10:05 grant arriving last loses.

    The 10:10 withdrawal finds a withdrawal kept; were ``at`` left at 10:00, the late grant
    would be newer than it, and the page would see the profile of a visitor who withdrew.
    """
    await ledger.remember("web", delivered(WITHDRAWN, NOW - timedelta(minutes=10)))
    await ledger.remember("web", delivered(WITHDRAWN, NOW))
    await ledger.remember("web", delivered(GRANTED, NOW - timedelta(minutes=5)))
    assert not await ledger.allows("web", "anon-1", "functional")


class CountingStore(MemoryStore):
    """A memory store that counts its writes (a subclass: the ledger goes through its API)."""

    def __init__(self) -> None:
        super().__init__(100)
        self.writes = 0

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        self.writes += 1
        await super().set(key, value, ttl)


async def test_a_retried_event_or_an_older_one_writes_nothing() -> None:
    """Only a state not older, and not the very one kept, is written; each newer one is."""
    store = CountingStore()
    ledger = ConsentLedger(CacheBackend(store, metrics=Metrics()), now=FakeClock(NOW.timestamp()))
    event = delivered(GRANTED, NOW - timedelta(minutes=1))
    await ledger.remember("web", event)
    await ledger.remember("web", event)  # a retry: the same state at the same instant
    await ledger.remember("web", delivered(WITHDRAWN, NOW - timedelta(minutes=2)))
    assert store.writes == 1
    await ledger.remember("web", delivered(GRANTED, NOW))
    assert store.writes == 2
    assert await ledger.allows("web", "anon-1", "functional")
