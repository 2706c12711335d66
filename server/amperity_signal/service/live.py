"""Live Events: a bounded ring buffer of delivery records per integration, plus live fan-out.

Records hold the input event, the transformed payload and the vendor request (its
Authorization already redacted by the client), as delivered: the event and the attributes
attached to it are the caller's and Amperity's, and may carry anything. A watch sends each
record ``redacted`` (``redaction.scrub``), so the work is done per record watched, never
on the delivery's path.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from amperity_signal.amperity.models import VendorCall
from amperity_signal.redaction import scrub

REPLAYED_METADATA = "x-live-replayed"
"""The header of a ``WatchDeliveries`` call that says how many of its first records are
replayed: a gateway merging several processes' watches orders their replays together."""


@dataclass(frozen=True)
class DeliveryRecord:
    """One delivery as the Live Events view shows it."""

    integration_id: str
    message_id: str
    delivered_at: datetime
    event: dict[str, Any]
    amperity_type: str
    payload: dict[str, Any]
    vendor_request: VendorCall | None
    outcome: str
    error: str = ""
    warnings: tuple[str, ...] = ()

    def redacted(self, secrets: tuple[str, ...]) -> DeliveryRecord:
        """A copy safe to show: sensitive keys' values and every secret replaced.

        Args:
            secrets: The texts to replace, longest first (``logs.scrub_forms``).
        """
        vendor = self.vendor_request
        if vendor is not None:
            vendor = replace(
                vendor, url=scrub(vendor.url, secrets), headers=scrub(vendor.headers, secrets)
            )
        return replace(
            self,
            message_id=scrub(self.message_id, secrets),
            event=scrub(self.event, secrets),
            payload=scrub(self.payload, secrets),
            vendor_request=vendor,
            error=scrub(self.error, secrets),
            warnings=tuple(scrub(warning, secrets) for warning in self.warnings),
        )


@dataclass(frozen=True)
class Watched:
    """A record as one watch receives it, with what that watch missed just before it."""

    record: DeliveryRecord
    missed_before: int = 0


class _Subscriber:
    """One watch: its integration filter, its queue, and what overflowed the queue."""

    __slots__ = ("closed", "integration_id", "missed", "queue")

    def __init__(self, integration_id: str, size: int) -> None:
        self.integration_id = integration_id
        self.queue: asyncio.Queue[Watched | None] = asyncio.Queue(size)
        self.missed = 0
        self.closed = False

    def close(self) -> None:
        """End the watch once the records already queued are taken."""
        self.closed = True
        if not self.queue.full():
            self.queue.put_nowait(None)  # wakes a watch waiting on an empty queue

    def offer(self, record: DeliveryRecord) -> None:
        """Queue ``record``, or count it missed when the watcher has fallen behind.

        A lagging watcher is not allowed to slow deliveries down or hold unbounded memory;
        it is told instead: the next record it does receive carries the count.
        """
        try:
            self.queue.put_nowait(Watched(record, self.missed))
        except asyncio.QueueFull:
            self.missed += 1
        else:
            self.missed = 0


class LiveEvents:
    """Recent delivery records per integration and subscriptions to new ones.

    Args:
        buffer_size: Records kept per integration for replay.
        subscriber_queue: Records a watch may have waiting; beyond that it misses records
            and the next one it receives says how many (``Watched.missed_before``).
    """

    def __init__(self, buffer_size: int = 200, subscriber_queue: int = 1_000) -> None:
        self._buffer_size = buffer_size
        self._subscriber_queue = subscriber_queue
        self._recent: dict[str, deque[DeliveryRecord]] = {}
        self._subscribers: set[_Subscriber] = set()
        self._closed = False

    def publish(self, record: DeliveryRecord) -> None:
        """Keep a record and hand it to every matching subscriber."""
        buffer = self._recent.setdefault(record.integration_id, deque(maxlen=self._buffer_size))
        buffer.append(record)
        for subscriber in self._subscribers:
            if subscriber.integration_id in ("", record.integration_id):
                subscriber.offer(record)

    def close(self) -> None:
        """End every watch (the service is stopping) after the records queued for it."""
        self._closed = True
        for subscriber in self._subscribers:
            subscriber.close()

    @property
    def watchers(self) -> int:
        """How many watches are open."""
        return len(self._subscribers)

    def recent(self, integration_id: str = "", limit: int | None = None) -> list[DeliveryRecord]:
        """The most recent records, oldest first, of one integration or all."""
        if integration_id:
            records = list(self._recent.get(integration_id, ()))
        else:
            records = sorted(
                (r for buffer in self._recent.values() for r in buffer),
                key=lambda r: r.delivered_at,
            )
        return records[-limit:] if limit else records

    def watch(self, integration_id: str = "", replay: int = 0) -> LiveWatch:
        """Subscribe now; the watch yields up to ``replay`` recent records, then live ones.

        The subscription starts when this returns, not when the watch is first read: a
        record published in between (say, while the service sends the watch's headers) is
        queued for it rather than missed. Close the watch (``aclose``) when done with it.
        """
        if self._closed:
            return LiveWatch(self._subscribers, None, [])
        subscriber = _Subscriber(integration_id, self._subscriber_queue)
        self._subscribers.add(subscriber)
        # Taken in the same step as the subscription: no record is both replayed and queued.
        replayed = self.recent(integration_id, min(replay, self._buffer_size)) if replay > 0 else []
        return LiveWatch(self._subscribers, subscriber, replayed)


class LiveWatch:
    """One subscription's records: the replayed ones, then live ones until the hub closes.

    Args:
        subscribers: The hub's open subscriptions, which ``aclose`` leaves.
        subscriber: This watch's subscription, or None when the hub was already closed.
        replayed: Recent records to yield first, oldest first.
    """

    def __init__(
        self,
        subscribers: set[_Subscriber],
        subscriber: _Subscriber | None,
        replayed: list[DeliveryRecord],
    ) -> None:
        self._subscribers = subscribers
        self._subscriber = subscriber
        self._replayed = deque(replayed)
        self.replaying = len(replayed)
        """How many recent records the watch yields first, before live ones."""

    def __aiter__(self) -> LiveWatch:
        return self

    async def __anext__(self) -> Watched:
        if self._replayed:
            return Watched(self._replayed.popleft())
        subscriber = self._subscriber
        if subscriber is None or (subscriber.closed and subscriber.queue.empty()):
            await self.aclose()
            raise StopAsyncIteration
        watched = await subscriber.queue.get()
        if watched is None:
            await self.aclose()
            raise StopAsyncIteration
        return watched

    async def aclose(self) -> None:
        """Leave the hub: nothing more is queued for this watch."""
        if self._subscriber is not None:
            self._subscribers.discard(self._subscriber)
            self._subscriber = None
        self._replayed.clear()
