"""The consent ledger on a real redis-server: the newer state stays, in one atomic script."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import redis.asyncio as redis
from redis.exceptions import RedisError

from amperity_signal.browser import ConsentLedger
from amperity_signal.enrich import CacheBackend
from amperity_signal.enrich.stores import RedisStore
from amperity_signal.errors import CacheUnavailable
from amperity_signal.metrics import Metrics

from .enrich_fakes import FakeClock
from .redis_support import CountingRedis, RedisProcess, ReplyLosingRedis, memory_or_redis

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
VISITOR = "anon_abc123"
KEY = "consent:" + hashlib.sha256(f"web\0{VISITOR}".encode()).hexdigest()
"""The visitor's key: spelled out, as replicas of every version must share it."""
GRANTED = {"functional": True, "marketing": True}
WITHDRAWN = {"functional": False, "marketing": True}


class InterleavingRedis(CountingRedis):
    """A counting client whose ``after_reply`` runs once after the next command is answered.

    The hook runs before the caller sees the reply: another replica's write landing
    between this replica's round trips, whichever command this one sent first.
    """

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.after_reply: Callable[[], Awaitable[object]] | None = None

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        reply = await super().execute_command(*args, **options)
        if self.after_reply is not None:
            hook, self.after_reply = self.after_reply, None
            await hook()
        return reply


def replica(
    server: RedisProcess, metrics: Metrics, clock: FakeClock
) -> tuple[ConsentLedger, CacheBackend, InterleavingRedis]:
    """One replica's ledger over a Redis client that counts (and can interleave) commands."""
    client = InterleavingRedis(server.port)
    backend = CacheBackend(
        RedisStore(client), metrics=metrics, clock=clock, unavailable_errors=(RedisError, OSError)
    )
    return ConsentLedger(backend, now=FakeClock(NOW.timestamp())), backend, client


def delivered(consent: dict[str, Any], timestamp: datetime) -> dict[str, Any]:
    """An event as Deliver hands it to the ledger (its timestamp already a datetime)."""
    return {
        "type": "track",
        "anonymous_id": VISITOR,
        "timestamp": timestamp,
        "context": {"consent": consent},
    }


def minutes_ago(minutes: float) -> datetime:
    """An instant before the ledger's clock."""
    return NOW - timedelta(minutes=minutes)


@pytest.fixture
def ledger(backend: CacheBackend) -> ConsentLedger:
    """The ledger as the service builds it, its clock at ``NOW``."""
    return ConsentLedger(backend, now=FakeClock(NOW.timestamp()))


async def stored_state(inspector: redis.Redis) -> dict[str, Any]:
    """The visitor's consent state as stored in Redis, ``at`` included."""
    raw = await inspector.get(KEY)
    assert raw is not None
    state: dict[str, Any] = orjson.loads(raw)
    return state


async def test_a_newer_state_landing_between_another_replicas_round_trips_stays(
    redis_server: RedisProcess, metrics: Metrics, clock: FakeClock
) -> None:
    """Replica A keeps an older grant; B's newer withdrawal lands just after A's first reply.

    With a GET then a SET, A's SET wrote its older grant over the withdrawal, and the page
    saw the profile of a visitor who had withdrawn.
    """
    first, first_cache, first_client = replica(redis_server, metrics, clock)
    second, second_cache, _ = replica(redis_server, metrics, clock)
    try:
        await first.record("web", VISITOR, GRANTED, minutes_ago(10))
        first_client.after_reply = lambda: second.record("web", VISITOR, WITHDRAWN, minutes_ago(1))
        await first.remember("web", delivered(GRANTED, minutes_ago(5)))
        assert first_client.after_reply is None  # the other replica's withdrawal did land
        assert not await first.allows("web", VISITOR, "functional")
        assert not await second.allows("web", VISITOR, "functional")
    finally:
        await first_cache.close()
        await second_cache.close()


async def test_concurrent_older_states_from_two_replicas_leave_the_newest(
    redis_server: RedisProcess, inspector: redis.Redis, metrics: Metrics, clock: FakeClock
) -> None:
    """320 states of one visitor, newest first, 32 in flight on two replicas: the newest stays.

    A late batch floods in just after the newest state. With a GET then a SET the older
    states read before the newest was written passed the check and were written over it.
    """
    replicas = [replica(redis_server, metrics, clock) for _ in range(2)]
    states = [
        ({"functional": number % 2 == 0, "order": number}, minutes_ago(320 - number))
        for number in reversed(range(320))
    ]
    queue = iter(states)

    async def sender(ledger: ConsentLedger) -> None:
        for consent, moment in queue:
            await ledger.record("web", VISITOR, consent, moment)

    try:
        # Every sender's connection open beforehand, so the first 32 states race at once.
        await asyncio.gather(
            *(replicas[number % 2][0].allows("web", VISITOR, "functional") for number in range(32))
        )
        await asyncio.gather(*(sender(replicas[number % 2][0]) for number in range(32)))
        assert all(cache.available for _, cache, _ in replicas)
        newest = {"functional": False, "order": 319, "at": minutes_ago(1).timestamp()}
        assert await stored_state(inspector) == newest
    finally:
        for _, cache, _ in replicas:
            await cache.close()


async def test_each_state_offered_costs_one_evalsha_and_a_retry_writes_nothing(
    redis_server: RedisProcess, inspector: redis.Redis, metrics: Metrics, clock: FakeClock
) -> None:
    """Change, same state newer, retry, older: one EVALSHA each, never a GET or a SET.

    The same state with a newer timestamp advances ``at``; a retried event (same state,
    same instant) and an older one leave the entry as it is, its TTL not renewed.
    """
    ledger, cache, client = replica(redis_server, metrics, clock)
    try:
        await ledger.remember("web", {**delivered(GRANTED, minutes_ago(20)), "anonymous_id": "x"})
        client.commands.clear()
        await ledger.remember("web", delivered(GRANTED, minutes_ago(10)))
        await ledger.remember("web", delivered(GRANTED, minutes_ago(5)))
        assert await stored_state(inspector) == {**GRANTED, "at": minutes_ago(5).timestamp()}
        await inspector.pexpire(KEY, 60_000)
        await ledger.remember("web", delivered(GRANTED, minutes_ago(5)))  # a retry
        await ledger.remember("web", delivered(WITHDRAWN, minutes_ago(8)))  # late
        assert await stored_state(inspector) == {**GRANTED, "at": minutes_ago(5).timestamp()}
        assert await inspector.pttl(KEY) <= 60_000
        assert client.commands == ["EVALSHA"] * 4
        assert await ledger.allows("web", VISITOR, "functional")
        assert client.commands == ["EVALSHA"] * 4 + ["GET"]
    finally:
        await cache.close()


async def test_a_flushed_script_cache_is_reloaded_without_an_outage(
    redis_server: RedisProcess, inspector: redis.Redis, metrics: Metrics, clock: FakeClock
) -> None:
    """After SCRIPT FLUSH the next state answers NOSCRIPT, loads the script and still lands."""
    ledger, cache, client = replica(redis_server, metrics, clock)
    try:
        await ledger.record("web", VISITOR, GRANTED, minutes_ago(10))
        await inspector.script_flush()
        client.commands.clear()
        assert await ledger.record("web", VISITOR, WITHDRAWN, minutes_ago(5)) == WITHDRAWN
        assert cache.available
        assert client.commands == ["EVALSHA", "SCRIPT LOAD", "EVALSHA"]
        assert not await ledger.allows("web", VISITOR, "functional")
    finally:
        await cache.close()


async def test_a_redis_restart_between_states_reloads_the_script_at_once(
    redis_server: RedisProcess, backend: CacheBackend, ledger: ConsentLedger
) -> None:
    """A restarted Redis has no scripts and dead pooled connections: the next state lands."""
    await ledger.record("web", VISITOR, GRANTED, minutes_ago(10))
    redis_server.kill()
    redis_server.start()
    assert await ledger.record("web", VISITOR, WITHDRAWN, minutes_ago(20)) == WITHDRAWN
    assert backend.available
    assert not await ledger.allows("web", VISITOR, "functional")


async def test_while_redis_is_down_no_one_has_consented_then_states_land_again(
    redis_server: RedisProcess,
    backend: CacheBackend,
    ledger: ConsentLedger,
    metrics: Metrics,
    clock: FakeClock,
) -> None:
    """Redis down: consent unreadable counts as not given, states are held; back: kept."""
    await ledger.record("web", VISITOR, GRANTED, minutes_ago(10))
    redis_server.kill()
    await ledger.remember("web", delivered(GRANTED, minutes_ago(5)))  # never raises: held
    assert not await ledger.allows("web", VISITOR, "functional")
    assert not backend.available
    lost = metrics.registry.get_sample_value(
        "amperity_signal_cache_total", {"cache": "consent", "result": "error"}
    )
    assert lost == 2

    redis_server.start()
    clock.advance(1)
    await ledger.remember("web", delivered(GRANTED, minutes_ago(5)))
    assert backend.available
    assert await ledger.allows("web", VISITOR, "functional")


async def test_a_state_recorded_while_redis_is_down_is_refused_and_not_kept(
    redis_server: RedisProcess, backend: CacheBackend, ledger: ConsentLedger, clock: FakeClock
) -> None:
    """Redis stopped: record() raises CacheUnavailable, not "granted"; back, the grant lands.

    Before, record() answered the grant it could not store (RecordConsent said
    profile_allowed), while allows() said no, and after the outage the withdrawal kept
    before it was still in force: the caller had been told something untrue.
    """
    await ledger.record("web", VISITOR, WITHDRAWN, minutes_ago(10))
    redis_server.kill()
    for _ in range(2):  # Redis refusing, then skipped for the retry interval
        with pytest.raises(CacheUnavailable) as refused:
            await ledger.record("web", VISITOR, GRANTED, minutes_ago(5))
        assert "not recorded" in refused.value.message
        assert str(redis_server.port) not in refused.value.message
    assert not await ledger.allows("web", VISITOR, "functional")  # fails closed
    assert not backend.available

    redis_server.start()
    clock.advance(1)
    assert not await ledger.allows("web", VISITOR, "functional")  # the grant was not kept
    assert backend.available
    assert await ledger.record("web", VISITOR, GRANTED, minutes_ago(5)) == GRANTED
    assert await ledger.allows("web", VISITOR, "functional")


async def test_a_state_whose_script_reply_was_lost_is_answered_as_kept(
    redis_server: RedisProcess, inspector: redis.Redis, metrics: Metrics, clock: FakeClock
) -> None:
    """The EVALSHA runs, its reply is lost, redis-py runs it again: the answer is still right.

    The second run finds the very bytes the first wrote and answers "in force", which is
    true; a newer state landing in between would be answered, which is true too.
    """
    client = ReplyLosingRedis(redis_server.port)
    cache = CacheBackend(
        RedisStore(client), metrics=metrics, clock=clock, unavailable_errors=(RedisError, OSError)
    )
    ledger = ConsentLedger(cache, now=FakeClock(NOW.timestamp()))
    try:
        await ledger.record("web", VISITOR, WITHDRAWN, minutes_ago(10))
        client.lose = "EVALSHA"
        assert await ledger.record("web", VISITOR, GRANTED, minutes_ago(5)) == GRANTED
        assert client.lost == ["EVALSHA"]
        assert await stored_state(inspector) == {**GRANTED, "at": minutes_ago(5).timestamp()}
        client.lose = "EVALSHA"
        assert await ledger.record("web", VISITOR, WITHDRAWN, minutes_ago(8)) == GRANTED
        assert client.lost == ["EVALSHA", "EVALSHA"]
        assert cache.available
    finally:
        await cache.close()


async def test_states_written_by_the_previous_version_are_read_and_outranked_as_before(
    ledger: ConsentLedger, inspector: redis.Redis
) -> None:
    """The GET/SET version's values, with and without ``at``, and this one's, in one format."""
    # What the GET/SET version stored: the state and ``at``, as orjson wrote them.
    await inspector.set(KEY, orjson.dumps({**WITHDRAWN, "at": minutes_ago(5).timestamp()}))
    assert await ledger.record("web", VISITOR, GRANTED, minutes_ago(10)) == WITHDRAWN
    assert await ledger.record("web", VISITOR, GRANTED, minutes_ago(4)) == GRANTED
    # ... the bytes it would have written itself, so it reads them as its own.
    assert await inspector.get(KEY) == orjson.dumps({**GRANTED, "at": minutes_ago(4).timestamp()})

    # The release before ``at``: its state yields to any, however old.
    await inspector.set(KEY, orjson.dumps(WITHDRAWN))
    assert not await ledger.allows("web", VISITOR, "functional")
    assert await ledger.record("web", VISITOR, GRANTED, datetime(2001, 1, 1, tzinfo=UTC)) == GRANTED
    assert await ledger.allows("web", VISITOR, "functional")


@dataclass(frozen=True)
class KeepRule:
    """One case of the rule: what is stored, the state offered, what stays and is answered."""

    stored: bytes | None
    offered: tuple[dict[str, Any], datetime]
    stays: dict[str, Any]
    answered: dict[str, Any]


def entry(consent: dict[str, Any], moment: datetime) -> bytes:
    """A state as the ledger stores it."""
    return orjson.dumps({**consent, "at": moment.timestamp()})


OLDER, NEWER = minutes_ago(10), minutes_ago(5)
AHEAD = NOW + timedelta(hours=1)
NESTED_AT = {"categories": {"at": True}, "functional": False}
KEEP_RULES = {
    "nothing stored": KeepRule(
        None, (GRANTED, OLDER), {**GRANTED, "at": OLDER.timestamp()}, GRANTED
    ),
    "an older state": KeepRule(
        entry(WITHDRAWN, OLDER), (GRANTED, NEWER), {**GRANTED, "at": NEWER.timestamp()}, GRANTED
    ),
    "a newer state": KeepRule(
        entry(WITHDRAWN, NEWER), (GRANTED, OLDER), {**WITHDRAWN, "at": NEWER.timestamp()}, WITHDRAWN
    ),
    "the same state, older": KeepRule(
        entry(GRANTED, OLDER), (GRANTED, NEWER), {**GRANTED, "at": NEWER.timestamp()}, GRANTED
    ),
    "the same state and instant": KeepRule(
        entry(GRANTED, OLDER), (GRANTED, OLDER), {**GRANTED, "at": OLDER.timestamp()}, GRANTED
    ),
    "another state of the same instant": KeepRule(
        entry(GRANTED, OLDER), (WITHDRAWN, OLDER), {**WITHDRAWN, "at": OLDER.timestamp()}, WITHDRAWN
    ),
    "a state without at": KeepRule(
        orjson.dumps(GRANTED), (WITHDRAWN, OLDER), {**WITHDRAWN, "at": OLDER.timestamp()}, WITHDRAWN
    ),
    "a nested at, no top-level one": KeepRule(
        orjson.dumps({**NESTED_AT, "google": {"at": NOW.timestamp()}}),
        (GRANTED, OLDER),
        {**GRANTED, "at": OLDER.timestamp()},
        GRANTED,
    ),
    "a newer state with a nested at": KeepRule(
        entry(NESTED_AT, NEWER), (GRANTED, OLDER), {**NESTED_AT, "at": NEWER.timestamp()}, NESTED_AT
    ),
    "an at that is not a number": KeepRule(
        orjson.dumps({**WITHDRAWN, "at": True}),
        (GRANTED, OLDER),
        {**GRANTED, "at": OLDER.timestamp()},
        GRANTED,
    ),
    # Stamped by a clock ahead of this one (another replica's, or this one's before NTP
    # stepped it back): its at counts as now, so a withdrawal made now replaces it...
    "a state stored ahead of the clock": KeepRule(
        entry(GRANTED, AHEAD), (WITHDRAWN, NOW), {**WITHDRAWN, "at": NOW.timestamp()}, WITHDRAWN
    ),
    # ... and a state older than now still yields to it.
    "an older state against one stored ahead": KeepRule(
        entry(GRANTED, AHEAD), (WITHDRAWN, OLDER), {**GRANTED, "at": AHEAD.timestamp()}, GRANTED
    ),
    "not JSON": KeepRule(b"\xff{", (GRANTED, OLDER), {**GRANTED, "at": OLDER.timestamp()}, GRANTED),
    "a JSON array": KeepRule(
        b'[{"at": 9e99}]', (GRANTED, OLDER), {**GRANTED, "at": OLDER.timestamp()}, GRANTED
    ),
}


@pytest.mark.parametrize("case", KEEP_RULES)
@pytest.mark.parametrize("backend_kind", ["memory", "redis"])
async def test_memory_and_redis_keep_the_same_state(
    request: pytest.FixtureRequest,
    backend_kind: str,
    case: str,
    metrics: Metrics,
    clock: FakeClock,
) -> None:
    """The Lua script and the memory store keep, and answer with, the same state."""
    rule = KEEP_RULES[case]
    cache = memory_or_redis(request, backend_kind, metrics, clock)
    ledger = ConsentLedger(cache, now=FakeClock(NOW.timestamp()))
    try:
        if rule.stored is not None:
            await cache.set(KEY, rule.stored, 60)
        consent, moment = rule.offered
        assert await ledger.record("web", VISITOR, consent, moment) == rule.answered
        stored = await cache.get(KEY)
        assert stored is not None
        assert orjson.loads(stored) == rule.stays
    finally:
        await cache.close()
