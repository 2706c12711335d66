"""What a reconnecting ``WatchDeliveries`` lets through and when it reopens: no I/O.

A broken watch is reopened asking the service to replay ``RECONNECT_REPLAY`` records (the
service clamps that to its buffer, 200 records per integration by default), so records
delivered while the watch was disconnected still arrive when the buffer holds them. A
``DeliveryWatch`` remembers the records it let through and skips them when the replay
repeats them. The asyncio and the sync client share it.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable

import grpc

from amperity_signal_client.errors import AmperitySignalError, error_for
from amperity_signal_client.retry import RetryPolicy
from datafly.amperity.v1 import amperity_service_pb2 as pb

# Twenty times the service's default buffer; remembering as many records as a reopened
# watch asks for means every repeat of the replay is recognised.
RECONNECT_REPLAY = 4096

RecordKey = tuple[str, str, int, int]


def record_key(record: pb.WatchDeliveriesResponse) -> RecordKey:
    """A record's identity: its integration, message_id and delivery time."""
    return (
        record.integration_id,
        record.message_id,
        record.delivered_at.seconds,
        record.delivered_at.nanos,
    )


def watch_ended() -> AmperitySignalError:
    """The error of a watch the service ended although the caller still reads it."""
    return error_for(
        grpc.StatusCode.UNAVAILABLE,
        "The service ended the WatchDeliveries stream (it stopped, or a proxy closed the "
        "stream); check that it is running, or allow more attempts in stream_retry.",
    )


class RecentRecords:
    """The keys of the last ``capacity`` records let through; older ones are forgotten."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._order: deque[RecordKey] = deque()
        self._keys: set[RecordKey] = set()

    def __len__(self) -> int:
        return len(self._order)

    def add(self, key: RecordKey) -> bool:
        """Remember ``key``; False when it is remembered already."""
        if key in self._keys:
            return False
        if len(self._order) == self._capacity:
            self._keys.discard(self._order.popleft())
        self._order.append(key)
        self._keys.add(key)
        return True


class DeliveryWatch:
    """One reconnecting watch: what each call asks for, which records are new, when to reopen.

    The first call asks for the caller's ``replay``; once a record came through, every
    reopened call asks for ``RECONNECT_REPLAY``. A record is let through once: not when
    one with the same ``record_key`` was among the last ``RECONNECT_REPLAY`` let through,
    nor when it was delivered before the first record of the watch (a replay reaches
    further back than the caller asked for).

    Failed calls are counted from the last new record, so a service that keeps failing
    or ending the watch exhausts ``policy``, and so does a quiet watch after
    ``max_attempts`` breaks without a new record between them. The time budget runs
    from the first failure since the service last answered a call (its headers or a
    record), so breaks hours apart do not add up to ``total_timeout``.

    Args:
        integration_id: Whose records; ``""`` for all.
        replay: How many recent records the first call asks for.
        policy: When to reopen (the client's ``stream_retry``).
        clock: Monotonic seconds.
        rng: The jitter's random source.
    """

    def __init__(
        self,
        integration_id: str,
        replay: int,
        policy: RetryPolicy,
        clock: Callable[[], float],
        rng: random.Random | None,
    ) -> None:
        self._integration_id = integration_id
        self._replay = replay
        self._policy = policy
        self._clock = clock
        self._rng = rng
        self._recent = RecentRecords(RECONNECT_REPLAY)
        self._first_delivered: tuple[int, int] | None = None
        self._failures = 0
        self._failing_since: float | None = None

    def request(self) -> pb.WatchDeliveriesRequest:
        """The request of the next call."""
        replay = self._replay if self._first_delivered is None else RECONNECT_REPLAY
        return pb.WatchDeliveriesRequest(integration_id=self._integration_id, replay=replay)

    def answered(self) -> None:
        """The service answered the current call: the watch is connected again."""
        self._failing_since = None

    def admit(self, record: pb.WatchDeliveriesResponse) -> bool:
        """Whether ``record`` is new to the caller; remembers it when it is."""
        self.answered()
        delivered = (record.delivered_at.seconds, record.delivered_at.nanos)
        if self._first_delivered is not None and delivered < self._first_delivered:
            return False
        if not self._recent.add(record_key(record)):
            return False
        if self._first_delivered is None:
            self._first_delivered = delivered
        self._failures = 0
        return True

    def delay_after(self, failure: AmperitySignalError) -> float:
        """The wait before reopening the watch after ``failure``.

        Raises:
            AmperitySignalError: ``failure`` itself, when it is not retryable or
                ``policy`` allows no more attempts.
        """
        self._failures += 1
        now = self._clock()
        if self._failing_since is None:
            self._failing_since = now
        delay = (
            None
            if failure.permanent
            else self._policy.next_delay(
                code=failure.code,
                attempt=self._failures,
                elapsed=now - self._failing_since,
                retry_after=failure.retry_after,
                rng=self._rng,
            )
        )
        if delay is None:
            raise failure
        return delay
