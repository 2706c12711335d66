"""Live Events: a bounded ring buffer of delivery records per integration, plus live fan-out.

Records hold only what is safe to show an operator: the input event, the transformed
payload and the vendor request with Authorization already redacted by the client.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from amperity_signal.amperity.models import VendorCall


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


class LiveEvents:
    """Recent delivery records per integration and subscriptions to new ones."""

    def __init__(self, buffer_size: int = 200, subscriber_queue: int = 1_000) -> None:
        self._buffer_size = buffer_size
        self._subscriber_queue = subscriber_queue
        self._recent: dict[str, deque[DeliveryRecord]] = {}
        self._subscribers: set[tuple[str, asyncio.Queue[DeliveryRecord]]] = set()

    def publish(self, record: DeliveryRecord) -> None:
        """Keep a record and hand it to every matching subscriber (dropped when one lags)."""
        buffer = self._recent.setdefault(record.integration_id, deque(maxlen=self._buffer_size))
        buffer.append(record)
        for integration_id, queue in self._subscribers:
            if integration_id in ("", record.integration_id):
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait(record)

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

    async def watch(
        self, integration_id: str = "", replay: int = 0
    ) -> AsyncIterator[DeliveryRecord]:
        """Yield up to ``replay`` recent records, then live ones until cancelled."""
        queue: asyncio.Queue[DeliveryRecord] = asyncio.Queue(self._subscriber_queue)
        entry = (integration_id, queue)
        self._subscribers.add(entry)
        try:
            if replay > 0:
                for record in self.recent(integration_id, min(replay, self._buffer_size)):
                    yield record
            while True:
                yield await queue.get()
        finally:
            self._subscribers.discard(entry)
