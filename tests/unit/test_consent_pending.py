"""Consent states the cache did not take are held, read first, and written once it answers."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from amperity_signal.browser import (
    CONSENT_PENDING_WARNING,
    CONSENT_UNKEPT_WARNING,
    ConsentLedger,
)
from amperity_signal.consent_pending import (
    PENDING_LIMIT,
    HeldState,
    HeldStates,
    PendingConsent,
)
from amperity_signal.enrich import CacheBackend
from amperity_signal.errors import CacheUnavailable
from amperity_signal.logs import JsonFormatter, message_id_var, request_id_var
from amperity_signal.metrics import Metrics
from tests.support import OutageStore, until
from tests.unit.enrich.enrich_fakes import FakeClock

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
GRANTED = {"functional": True, "marketing": True}
WITHDRAWN = {"functional": False, "marketing": True}
VISITOR = "anon-withdraws"
LOGGER = "amperity_signal.consent"


def grant(at: float) -> HeldState:
    """A held state that grants the condition."""
    return HeldState(b"{}", at, denies=False)


def denial(at: float) -> HeldState:
    """A held state that does not grant the condition."""
    return HeldState(b"{}", at, denies=True)


def unwritten(metrics: Metrics, cause: str) -> float | None:
    """``amperity_signal_consent_unwritten_total`` for ``cause``."""
    return metrics.registry.get_sample_value(
        "amperity_signal_consent_unwritten_total", {"cause": cause}
    )


def test_a_full_hold_gives_way_with_its_oldest_grant_never_a_denial_first() -> None:
    """Full: the oldest grant goes, however old the denials; a denial only with no grant left."""
    held = HeldStates(limit=3)
    assert not held.hold("d1", denial(1))
    assert not held.hold("g1", grant(2))
    assert not held.hold("d2", denial(3))
    assert held.hold("g2", grant(4))  # g1 gives way, not d1, which is older
    assert [key for key, _ in held.in_order()] == ["d1", "d2", "g2"]
    assert held.hold("d3", denial(5))  # g2, the last grant, gives way
    assert [key for key, _ in held.in_order()] == ["d1", "d2", "d3"]
    assert held.hold("g3", grant(6))  # only denials held: the grant offered is not held
    assert held.get("g3") is None
    assert held.hold("d4", denial(7))  # only denials: the oldest one gives way
    assert [key for key, _ in held.in_order()] == ["d2", "d3", "d4"]


def sized(at: float, size: int, *, denies: bool) -> HeldState:
    """A held state whose stored form is ``size`` bytes."""
    return HeldState(b"x" * size, at, denies=denies)


def test_a_hold_full_by_bytes_gives_way_as_one_full_by_count() -> None:
    """The bytes held are capped too: grants go first, and a grant with no room is not held.

    Until session 27 only the count was: one state is as large as the consent it came
    with, and 10,000 of one /v1/batch event's size held gigabytes.
    """
    held = HeldStates(limit=100, byte_limit=100)  # each key below adds 2 bytes
    assert not held.hold("d1", sized(1, 28, denies=True))
    assert not held.hold("g1", sized(2, 28, denies=False))
    assert not held.hold("g2", sized(3, 28, denies=False))
    assert held.hold("d2", sized(4, 48, denies=True)) == 2  # both grants, to make room
    assert [key for key, _ in held.in_order()] == ["d1", "d2"]
    assert held.hold("g3", sized(5, 38, denies=False)) == 1  # no room beside the denials
    assert held.get("g3") is None
    assert held.hold("d3", sized(6, 48, denies=True)) == 1  # the oldest denial
    assert [key for key, _ in held.in_order()] == ["d2", "d3"]
    assert not held.hold("d3", sized(7, 8, denies=True))  # a newer state frees its bytes
    assert not held.hold("g4", sized(8, 8, denies=False))
    assert [key for key, _ in held.in_order()] == ["d2", "d3", "g4"]
    assert held.hold("d4", sized(9, 200, denies=True)) == 3  # alone larger: held alone
    assert [key for key, _ in held.in_order()] == ["d4"]


def test_a_held_state_gives_way_only_to_one_not_older() -> None:
    """Newer wins: an older state offered leaves the held one; of one instant, the later."""
    held = HeldStates()
    withdrawal = denial(10)
    held.hold(VISITOR, withdrawal)
    held.hold(VISITOR, grant(5))  # a late event from before the withdrawal
    assert held.get(VISITOR) is withdrawal
    same_instant = grant(10)
    held.hold(VISITOR, same_instant)
    assert held.get(VISITOR) is same_instant
    assert len(held) == 1


def test_a_written_state_is_forgotten_only_while_it_is_the_one_held() -> None:
    """A state replaced while its write was under way stays held for its own write."""
    held = HeldStates()
    first, second = denial(1), grant(2)
    held.hold(VISITOR, first)
    held.hold(VISITOR, second)
    held.written(VISITOR, first)
    assert held.get(VISITOR) is second
    held.written(VISITOR, second)
    assert held.get(VISITOR) is None


async def test_a_full_hold_counts_each_state_given_up_and_logs_it_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each eviction counts as cause="evicted"; one warning for them all, naming no visitor."""
    metrics = Metrics()

    async def refused(key: str, state: HeldState) -> None:
        raise CacheUnavailable("down")

    pending = PendingConsent(refused, metrics=metrics, limit=2)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        for number in range(5):
            assert pending.hold(f"consent:{number}", grant(number))  # each held, in turn
        assert await pending.close(asyncio.get_running_loop().time()) == 2
    assert unwritten(metrics, "evicted") == 3
    evictions = [r for r in caplog.records if "give way" in r.getMessage()]
    assert len(evictions) == 1
    assert "consent:" not in evictions[0].getMessage()


async def test_failed_tries_wait_twice_as_long_each_time_up_to_five_seconds() -> None:
    """Each failed try doubles the wait from 1 s, at most 5 s: 1, 2, 4, 5, 5; then written."""
    waits: list[float] = []
    written: list[str] = []

    async def pause(answered: asyncio.Event, seconds: float) -> None:
        waits.append(seconds)

    async def write(key: str, state: HeldState) -> None:
        if len(waits) < 5:
            raise CacheUnavailable("down")
        written.append(key)

    pending = PendingConsent(write, pause=pause)
    pending.hold(VISITOR, denial(1))
    await until(lambda: written == [VISITOR], lambda: f"never written; waits {waits}")
    assert waits == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert await pending.close(asyncio.get_running_loop().time()) == 0


@pytest.fixture
def clock() -> FakeClock:
    """The cache backend's clock: moved past its retry interval by hand."""
    return FakeClock()


@pytest.fixture
def store(clock: FakeClock) -> OutageStore:
    """The shared cache's store, which a test takes down and brings back."""
    return OutageStore(clock)


@pytest.fixture
def metrics() -> Metrics:
    """The ledger's metrics."""
    return Metrics()


@pytest.fixture
def ledger(store: OutageStore, clock: FakeClock, metrics: Metrics) -> ConsentLedger:
    """The ledger as the service builds it, over a cache that can fail; its clock at NOW."""
    backend = CacheBackend(store, metrics=metrics, clock=clock)
    return ConsentLedger(backend, now=NOW.timestamp, metrics=metrics)


def delivered(
    consent: dict[str, Any], minutes_ago: float, visitor: str = VISITOR
) -> dict[str, Any]:
    """An event as Deliver hands it to the ledger."""
    return {
        "type": "track",
        "anonymous_id": visitor,
        "timestamp": NOW - timedelta(minutes=minutes_ago),
        "context": {"consent": consent},
    }


async def stored(store: OutageStore, visitor: str = VISITOR) -> dict[str, Any]:
    """The visitor's state as the cache (answering) holds it, ``at`` included."""
    digest = hashlib.sha256(f"web\0{visitor}".encode()).hexdigest()
    raw = await store.get(f"consent:{digest}")
    assert raw is not None
    state: dict[str, Any] = orjson.loads(raw)
    return state


def back(store: OutageStore, clock: FakeClock) -> None:
    """The cache answers again, and the backend's retry interval is over."""
    store.down = False
    clock.advance(1)


async def test_a_withdrawal_the_cache_did_not_take_is_held_read_first_and_written_after(
    ledger: ConsentLedger, store: OutageStore, clock: FakeClock, metrics: Metrics
) -> None:
    """Cache down: the withdrawal is held, not dropped; back: no profile, then it is written.

    Before, ``remember`` dropped it: once the cache answered, the older grant was still
    stored, and ``allows`` (BrowserProfile's gate) said yes until the visitor's next event.
    """
    await ledger.remember("web", delivered(GRANTED, 10), "functional")
    store.down = True
    warnings = await ledger.remember("web", delivered(WITHDRAWN, 1), "functional")
    assert warnings == (CONSENT_PENDING_WARNING,)
    assert metrics.registry.get_sample_value("amperity_signal_consent_pending") == 1

    back(store, clock)
    assert (await stored(store))["functional"] is True  # the older grant, still stored
    # The held state is read first; the read, answered, has the held state written now.
    assert not await ledger.allows("web", VISITOR, "functional")
    await until(lambda: _withdrawn(store), lambda: "the held withdrawal was never written")
    await until(lambda: metrics.registry.get_sample_value("amperity_signal_consent_pending") == 0)
    assert not await ledger.allows("web", VISITOR, "functional")


async def test_a_grant_the_full_hold_does_not_keep_is_warned_of_as_not_kept_not_as_pending(
    ledger: ConsentLedger, store: OutageStore
) -> None:
    """Hold full of withdrawals: the grant offered gives way, and Deliver says so, not "held".

    Until session 27 Deliver answered the pending warning ("this process holds it") for a
    state the full hold had just given up.
    """
    store.down = True
    for number in range(PENDING_LIMIT):
        withdrawal = delivered(WITHDRAWN, 1, visitor=f"withdrew-{number}")
        assert await ledger.remember("web", withdrawal, "functional") == (CONSENT_PENDING_WARNING,)
    warnings = await ledger.remember("web", delivered(GRANTED, 1), "functional")
    assert warnings == (CONSENT_UNKEPT_WARNING,)
    assert "not kept" in warnings[0]


async def test_the_cache_answering_a_page_s_read_writes_the_held_state_at_once(
    store: OutageStore, clock: FakeClock, metrics: Metrics
) -> None:
    """The backend's "available again" writes a held state; no timed try is due for an hour.

    Until session 27 the timed try (1 s) wrote it in every test too, so the hook that does
    it at once (``CacheBackend.on_available``) could be unwired unnoticed.
    """
    backend = CacheBackend(store, metrics=metrics, clock=clock)
    ledger = ConsentLedger(backend, now=NOW.timestamp, metrics=metrics, first_retry=3600)
    await ledger.remember("web", delivered(GRANTED, 10), "functional")
    store.down = True
    await ledger.remember("web", delivered(WITHDRAWN, 1), "functional")

    back(store, clock)
    assert not await ledger.allows("web", VISITOR, "functional")  # a page's read, answered
    await until(lambda: _withdrawn(store), lambda: "only on_available could write it")
    await ledger.close(asyncio.get_running_loop().time())


async def _withdrawn(store: OutageStore) -> bool:
    return (await stored(store))["functional"] is False


async def test_a_newer_grant_written_meanwhile_wins_over_the_held_withdrawal(
    ledger: ConsentLedger, store: OutageStore, clock: FakeClock, metrics: Metrics
) -> None:
    """The visitor grants again after the held withdrawal: the grant is kept, never undone."""
    await ledger.remember("web", delivered(GRANTED, 10), "functional")
    store.down = True
    assert await ledger.remember("web", delivered(WITHDRAWN, 5), "functional")
    back(store, clock)
    assert await ledger.remember("web", delivered(GRANTED, 1), "functional") == ()
    assert metrics.registry.get_sample_value("amperity_signal_consent_pending") == 0
    assert await ledger.allows("web", VISITOR, "functional")
    assert await ledger.close(asyncio.get_running_loop().time() + 10) == 0
    assert (await stored(store))["functional"] is True


async def test_an_older_event_offered_while_a_withdrawal_is_held_writes_the_withdrawal(
    ledger: ConsentLedger, store: OutageStore, clock: FakeClock
) -> None:
    """A late grant from before the held withdrawal writes the withdrawal in its place.

    Before, the withdrawal was dropped and the late grant, newer than the one stored, was
    written: the page saw the profile of a visitor who had withdrawn.
    """
    await ledger.remember("web", delivered(GRANTED, 10), "functional")
    store.down = True
    await ledger.remember("web", delivered(WITHDRAWN, 1), "functional")
    back(store, clock)
    await ledger.remember("web", delivered(GRANTED, 5), "functional")
    assert (await stored(store))["functional"] is False
    assert not await ledger.allows("web", VISITOR, "functional")
    assert await ledger.record("web", VISITOR, GRANTED, NOW - timedelta(minutes=3)) == WITHDRAWN


class JsonLines(logging.Handler):
    """The consent logger's lines as the service writes them (ids read where logged)."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(JsonFormatter().format(record)))

    def count(self, level: str) -> int:
        return sum(1 for line in self.lines if line["level"] == level)


@pytest.fixture
def consent_log() -> Iterator[JsonLines]:
    """The consent logger's lines, at info and above."""
    logger, handler = logging.getLogger(LOGGER), JsonLines()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


async def test_one_warning_per_outage_and_one_line_once_written_naming_no_visitor_or_call(
    ledger: ConsentLedger, store: OutageStore, clock: FakeClock, consent_log: JsonLines
) -> None:
    """Three held states, one warning; written, one line saying how many; a new outage, again.

    None names a visitor, nor carries the ids of the call whose event started the outage.
    """
    ids = message_id_var.set("msg-that-started-it"), request_id_var.set("req-that-started-it")
    store.down = True
    for number in range(3):
        assert await ledger.remember("web", delivered(WITHDRAWN, 1, f"anon-{number}"), "functional")
    await until(lambda: consent_log.count("warning") == 1)
    back(store, clock)
    await ledger.remember("web", delivered(GRANTED, 0, "anon-other"), "functional")
    await until(lambda: consent_log.count("info") == 1)
    assert consent_log.lines[-1]["written"] == 3
    store.down = True
    clock.advance(1)
    await ledger.remember("web", delivered(WITHDRAWN, 0, "anon-4"), "functional")
    await until(lambda: consent_log.count("warning") == 2)
    message_id_var.reset(ids[0])
    request_id_var.reset(ids[1])
    await ledger.close(asyncio.get_running_loop().time())  # the stop's own line: no call's
    said = json.dumps(consent_log.lines)
    for named in ("anon-", "consent:", "that-started-it"):
        assert named not in said


async def test_at_a_stop_the_held_states_are_tried_once_and_those_left_are_logged_and_counted(
    ledger: ConsentLedger,
    store: OutageStore,
    clock: FakeClock,
    metrics: Metrics,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Still down at the stop: both left, logged as a count, counted as cause="stopped"."""
    store.down = True
    for visitor in ("anon-1", "anon-2"):
        await ledger.remember("web", delivered(WITHDRAWN, 1, visitor), "functional")
    clock.advance(1)  # past the backend's retry interval: the stop's one try reaches the store
    calls = store.calls
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert await ledger.close(asyncio.get_running_loop().time() + 10) == 2
    assert store.calls == calls + 1  # tried once: the backend then skips the store
    (line,) = [r for r in caplog.records if r.getMessage().startswith("2 consent states")]
    assert line.__dict__["unwritten"] == 2
    assert unwritten(metrics, "stopped") == 2


class SkippingCache:
    """The backend as a held state's write meets it: skipping the store until ``skip_until``.

    Its ``pause`` is the retry loop's wait on a fake clock: it moves the clock on at once.
    """

    def __init__(self, clock: FakeClock, skip_until: float) -> None:
        self.clock = clock
        self.skip_until = skip_until
        self.pauses: list[float] = []
        self.written: list[str] = []

    async def write(self, key: str, state: HeldState) -> None:
        if self.clock() < self.skip_until:
            raise CacheUnavailable("skipped: the store failed less than a second ago")
        self.written.append(key)

    async def pause(self, answered: asyncio.Event, seconds: float) -> None:
        self.pauses.append(seconds)
        self.clock.advance(seconds)


@pytest.mark.parametrize(("seconds_left", "tries_again"), [(10.0, True), (0.5, False)])
async def test_at_a_stop_a_try_the_skip_window_refused_is_made_again_after_it_in_time(
    clock: FakeClock, seconds_left: float, *, tries_again: bool
) -> None:
    """Redis back just before the stop, the backend still skipping it: one more try after.

    Until session 27 the stop's one try went through the skip window and failed without
    reaching Redis; the states were lost though Redis answered. With too little time left
    there is no second try.
    """
    cache = SkippingCache(clock, skip_until=clock() + 0.8)  # failed 0.2 s before the stop
    pending = PendingConsent(cache.write, pause=cache.pause)
    assert pending.hold(VISITOR, denial(1))  # its retry loop, cancelled unstarted, never runs

    left = await pending.close(asyncio.get_running_loop().time() + seconds_left)

    assert (left, cache.written) == ((0, [VISITOR]) if tries_again else (1, []))
    assert cache.pauses == ([1.0] if tries_again else [])


async def test_at_a_stop_with_the_cache_back_the_held_states_are_written(
    ledger: ConsentLedger, store: OutageStore, clock: FakeClock
) -> None:
    """Back before the stop: its one try writes the held withdrawal; nothing is left."""
    await ledger.remember("web", delivered(GRANTED, 10), "functional")
    store.down = True
    await ledger.remember("web", delivered(WITHDRAWN, 1), "functional")
    back(store, clock)
    assert await ledger.close(asyncio.get_running_loop().time() + 10) == 0
    assert (await stored(store))["functional"] is False
