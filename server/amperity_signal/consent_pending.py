"""Consent states the cache did not take: held in this process, written once it answers.

Deliver hands the consent ledger (``browser.ConsentLedger``) the state each event carries.
Until session 27, a state the shared cache did not take (Redis down, or paused) was
dropped: a withdrawal made during the outage was lost, and once Redis answered again the
older grant was still stored and pages saw the visitor's profile until the next event.

Such a state is now held here, the newest per visitor (of two, the older ``at`` gives
way; of one instant, the later arrival wins, as in the ledger's script), and written by
a retry loop that runs from the first held state until none is left: a first try
``FIRST_RETRY_SECONDS`` after the failure, then twice the wait after each failed try up
to ``LONGEST_RETRY_SECONDS``, and at once when the cache answers any call again (a
page's read, another event's write: ``CacheBackend.on_available``). Each write is the
ledger's "keep the newer state", so a newer state written meanwhile (another event,
another replica) stays. While a state is held, the ledger reads it before the stored
one (``ConsentLedger.gate``): a held state that does not grant the condition hides the
profile whatever is stored (fails closed).

At most ``PENDING_LIMIT`` states are held, of at most ``PENDING_BYTES`` in all (one state
is as large as the consent it came with). Past either the oldest held grant gives way, and a
denial only when no grant is left: a lost grant hides a profile until the visitor's next
event, a lost denial could show one. The loop logs one warning when it starts (the cache
refused a state), one line when it has written them all, and one warning the first time
in an outage that a state gives way; none names a visitor, and none carries the ids of the
call that happened to start it. At a stop the held states are tried once, and once more
a second later if the cache refused that try and the deadline allows (``close``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from amperity_signal.errors import CacheUnavailable
from amperity_signal.metrics import Metrics

PENDING_LIMIT: Final = 10_000
"""Consent states held at most (most are a few hundred bytes each)."""
PENDING_BYTES: Final = 8 * 1024 * 1024
"""The held states' stored forms and keys, in bytes at most: a state may be far larger
than most (256 category codes of up to 8,192 characters each), and 10,000 such would be
gigabytes."""
FIRST_RETRY_SECONDS: Final = 1.0
"""The first try's wait: the cache backend skips the store for a second after a failure."""
LONGEST_RETRY_SECONDS: Final = 5.0
"""The longest wait between tries: meanwhile other workers and replicas read the older
stored state."""

log = logging.getLogger("amperity_signal.consent")


@dataclass(frozen=True, eq=False)
class HeldState:
    """One consent state as the ledger writes it, not written yet.

    Compared by identity: a state is forgotten only when it is still the one held.

    Attributes:
        value: The stored form, the consent's keys and ``at`` (JSON).
        at: When the state was true, in epoch seconds.
        denies: Whether it does not grant the integration's ``browser_consent`` condition
            (or the condition is not known): such states are the last to give way.
    """

    value: bytes
    at: float
    denies: bool


class HeldStates:
    """The newest unwritten state per consent key, at most ``limit``; denials kept longest.

    Args:
        limit: States held at most.
        byte_limit: Bytes held at most, each state's stored form and key. A denial larger
            than that on its own is still held, alone (Deliver and RecordConsent bound it).
    """

    def __init__(self, limit: int = PENDING_LIMIT, byte_limit: int = PENDING_BYTES) -> None:
        if limit < 1 or byte_limit < 1:
            raise ValueError("limit and byte_limit must be at least 1")
        self._limit = limit
        self._byte_limit = byte_limit
        # Each in the order held, oldest first: a grant gives way before any denial.
        self._grants: dict[str, HeldState] = {}
        self._denials: dict[str, HeldState] = {}
        self._bytes = 0
        self._denial_bytes = 0  # of them, the denials'

    def __len__(self) -> int:
        return len(self._grants) + len(self._denials)

    @property
    def limit(self) -> int:
        """States held at most."""
        return self._limit

    def get(self, key: str) -> HeldState | None:
        """The state held for ``key``, or None."""
        held = self._denials.get(key)
        return held if held is not None else self._grants.get(key)

    @property
    def byte_limit(self) -> int:
        """Bytes held at most."""
        return self._byte_limit

    def hold(self, key: str, state: HeldState) -> int:
        """Hold ``state`` for ``key`` unless a newer one is held; how many states gave way.

        Of two states of one instant the later arrival is held, as the ledger keeps it.
        When the hold is full (by count or by bytes) the oldest held grants give way; when
        the denials alone leave no room, a grant offered is not held (it gives way itself,
        and no held grant does), and a denial offered takes the oldest held denials' place.
        """
        held = self.get(key)
        if held is not None:
            if held.at > state.at:
                return 0
            self._forget(key)
        size = _size(key, state)
        if not state.denies and (
            len(self._denials) >= self._limit or self._denial_bytes + size > self._byte_limit
        ):
            return 1
        given_way = 0
        while self._full(size) and (self._grants or self._denials):
            oldest = self._grants or self._denials
            self._forget(next(iter(oldest)))
            given_way += 1
        (self._denials if state.denies else self._grants)[key] = state
        self._bytes += size
        if state.denies:
            self._denial_bytes += size
        return given_way

    def written(self, key: str, state: HeldState) -> None:
        """Forget ``state``, when it is still the one held for ``key``."""
        if self.get(key) is state:
            self._forget(key)

    def in_order(self) -> list[tuple[str, HeldState]]:
        """Every held state, denials first (written first), each kind oldest first."""
        return [*self._denials.items(), *self._grants.items()]

    def _full(self, size: int) -> bool:
        """Whether a state of ``size`` bytes finds no room as the hold is."""
        return len(self) >= self._limit or self._bytes + size > self._byte_limit

    def _forget(self, key: str) -> None:
        denial = self._denials.pop(key, None)
        held = denial or self._grants.pop(key, None)
        if held is not None:
            self._bytes -= _size(key, held)
            self._denial_bytes -= _size(key, held) if denial else 0


def _size(key: str, state: HeldState) -> int:
    """What a held state counts towards ``byte_limit``: its stored form and its key."""
    return len(state.value) + len(key)


Write = Callable[[str, HeldState], Awaitable[object]]
"""Writes one held state under its key ("keep the newer"); ``CacheUnavailable`` if not."""
Pause = Callable[[asyncio.Event, float], Awaitable[object]]
"""Waits the given seconds between tries, or less when the event (the cache answered) is set."""


async def pause_until_answered(answered: asyncio.Event, seconds: float) -> None:
    """The retry loop's wait: ``seconds`` on the event loop's clock, or until ``answered``."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(answered.wait(), seconds)


class PendingConsent:
    """Holds the consent states the cache did not take, and writes them once it answers.

    Args:
        write: The ledger's write of one state; raises ``CacheUnavailable`` while the
            cache does not answer.
        metrics: ``consent_pending`` and ``consent_unwritten`` (None: not counted).
        limit: States held at most (``HeldStates``).
        byte_limit: Bytes held at most (``HeldStates``).
        first_retry: Seconds before the first try.
        longest_retry: The longest wait between tries.
        pause: The wait between tries (a test's records the waits and returns at once).
    """

    def __init__(
        self,
        write: Write,
        *,
        metrics: Metrics | None = None,
        limit: int = PENDING_LIMIT,
        byte_limit: int = PENDING_BYTES,
        first_retry: float = FIRST_RETRY_SECONDS,
        longest_retry: float = LONGEST_RETRY_SECONDS,
        pause: Pause = pause_until_answered,
    ) -> None:
        self._write = write
        self._pause = pause
        self._metrics = metrics
        self._states = HeldStates(limit, byte_limit)
        self._first_retry = first_retry
        self._longest_retry = longest_retry
        self._answered = asyncio.Event()
        self._retrying: asyncio.Task[None] | None = None
        self._evicted = 0  # in this outage, for its closing line
        self._closed = False

    def __len__(self) -> int:
        return len(self._states)

    def get(self, key: str) -> HeldState | None:
        """The state held for ``key``, or None (the common case: a dictionary miss)."""
        return self._states.get(key) if len(self._states) else None

    def hold(self, key: str, state: HeldState) -> bool:
        """Hold a state the cache did not take, and see that it is tried again.

        Returns:
            Whether ``state``, or a newer one of its key, is held: False when the hold is
            full of denials and ``state`` is a grant, which then gives way itself.
        """
        given_way = self._states.hold(key, state)
        if given_way:
            if not self._evicted:
                _quietly(
                    log.warning,
                    "consent states held for the cache reached their limit (%d states or "
                    "%d bytes): the oldest held grants give way first (a denial only when "
                    "no grant is left), each counted in "
                    'amperity_signal_consent_unwritten_total{cause="evicted"}',
                    self._states.limit,
                    self._states.byte_limit,
                )
            self._evicted += given_way
            if self._metrics is not None:
                self._metrics.consent_unwritten.labels(cause="evicted").inc(given_way)
        self._count()
        if not self._closed and (self._retrying is None or self._retrying.done()):
            # A context of its own: its lines carry no ids of the call that started it.
            self._retrying = asyncio.get_running_loop().create_task(
                self._retry(), context=contextvars.Context()
            )
        return self._states.get(key) is not None

    def settled(self, key: str, held: HeldState, written_at: float) -> None:
        """A state as new as ``held``, or ``held`` itself, was written under ``key``."""
        if held.at <= written_at:
            self._states.written(key, held)
            self._count()

    def answered(self) -> None:
        """The cache answers again: the held states are tried now, not at their next try."""
        if len(self._states):
            self._answered.set()

    async def close(self, deadline: float) -> int:
        """Stop retrying, try the held states once by ``deadline``; how many are left.

        ``deadline`` is on the event loop's clock. Those left are logged (how many, never
        which) and counted as ``stopped``. A try the cache refuses is made once more after
        ``first_retry`` (sooner if the cache answers meanwhile), when the deadline allows:
        the backend skips the store for a second after a failure, so a cache back just
        before the stop would otherwise be skipped, not tried.
        """
        self._closed = True
        if self._retrying is not None:
            self._retrying.cancel()
            await asyncio.wait({self._retrying})
        if not len(self._states):
            return 0
        with contextlib.suppress(CacheUnavailable, TimeoutError):
            async with asyncio.timeout_at(deadline):
                await self._write_at_stop(deadline)
        left = len(self._states)
        if left:
            log.warning(
                "%d consent states the cache did not take could not be written before the "
                "stop: they are lost, and their visitors' older stored states stay in force "
                "until their next event",
                left,
                extra={"unwritten": left},
            )
            if self._metrics is not None:
                self._metrics.consent_unwritten.labels(cause="stopped").inc(left)
        return left

    async def _retry(self) -> None:
        """Write the held states until none is left, waiting longer after each failed try."""
        log.warning(
            "consent states the cache did not take are held in this process and written "
            "when it answers; meanwhile this process shows no profile a held state does "
            "not grant, while other workers and replicas read the older stored state",
        )
        written, wait = 0, self._first_retry
        while len(self._states):
            if wait > 0:
                await self._pause(self._answered, wait)
            self._answered.clear()
            try:
                written += await self._write_held()
            except CacheUnavailable:
                wait = min(wait * 2 or self._first_retry, self._longest_retry)
            else:
                wait = 0.0
        log.info(
            "consent states held through the cache outage are written",
            extra={"written": written, "evicted": self._evicted},
        )
        self._evicted = 0

    async def _write_at_stop(self, deadline: float) -> None:
        """Write the held states; once more after the backend's skip window if refused."""
        try:
            await self._write_held()
        except CacheUnavailable:
            if asyncio.get_running_loop().time() + self._first_retry >= deadline:
                raise
            self._answered.clear()
            await self._pause(self._answered, self._first_retry)
            await self._write_held()

    async def _write_held(self) -> int:
        """Write every held state, denials first; how many. Stops at the first failure."""
        count = 0
        for key, state in self._states.in_order():
            if self._states.get(key) is not state:
                continue  # a newer one came meanwhile: it is written in its turn
            await self._write(key, state)
            self._states.written(key, state)
            self._count()
            count += 1
        return count

    def _count(self) -> None:
        if self._metrics is not None:
            self._metrics.consent_pending.set(len(self._states))


def _quietly(emit: Callable[..., None], message: str, *args: object) -> None:
    """Log outside the current call's context: a line about an outage names no call."""
    contextvars.Context().run(emit, message, *args)
