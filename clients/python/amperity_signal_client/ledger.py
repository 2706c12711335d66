"""The bookkeeping of an at-least-once DeliverStream: which events still need an answer.

Pure logic shared by the asyncio and the sync client. An event stays in the ledger from
the moment it is handed to the stream until its *final* answer: a success, a
non-retryable error, or a retryable error after its last attempt. Everything still in the
ledger when a stream breaks is sent again on the next one.
"""

from __future__ import annotations

import random
import uuid
from collections import deque
from dataclasses import dataclass

from amperity_signal_client.retry import RetryPolicy
from datafly.amperity.v1 import amperity_service_pb2 as pb


def ensure_message_id(event: pb.Event) -> pb.Event:
    """The event itself when it has a message_id, else a copy with a fresh UUID.

    Retries and re-sends must carry the same id, so the service and Amperity can tell a
    re-sent event from a new one.
    """
    if event.message_id:
        return event
    copy = pb.Event()
    copy.CopyFrom(event)
    copy.message_id = str(uuid.uuid4())
    return copy


@dataclass
class _Entry:
    event: pb.Event
    failures: int = 0


@dataclass(frozen=True)
class Answer:
    """What to do with one response of the stream.

    Attributes:
        final: The response to hand to the caller, when the event is finished.
        retry: The event to send again after ``retry_delay`` seconds.
        retry_delay: The wait before re-sending ``retry``.
        release: A held event with the same message_id, now free to be sent.
    """

    final: pb.DeliverStreamResponse | None = None
    retry: pb.Event | None = None
    retry_delay: float = 0.0
    release: pb.Event | None = None


class Ledger:
    """The events of one ``deliver_many`` that have no final answer yet, in send order.

    Two events with the same message_id are never in flight together (their answers
    could not be told apart): the second is held until the first is finished.
    """

    def __init__(self, policy: RetryPolicy, rng: random.Random | None = None) -> None:
        self._policy = policy
        self._rng = rng
        self._pending: dict[str, _Entry] = {}
        self._held: dict[str, deque[pb.Event]] = {}
        self._held_count = 0

    def __len__(self) -> int:
        return len(self._pending) + self._held_count

    def admit(self, event: pb.Event) -> pb.Event | None:
        """Take an event in; returns it (with a message_id) when it may be sent now."""
        event = ensure_message_id(event)
        if event.message_id in self._pending:
            self._held.setdefault(event.message_id, deque()).append(event)
            self._held_count += 1
            return None
        self._pending[event.message_id] = _Entry(event)
        return event

    def is_pending(self, message_id: str) -> bool:
        """Whether the event with this id still waits for its final answer."""
        return message_id in self._pending

    def unacknowledged(self) -> list[pb.Event]:
        """The events to send again on a new stream, oldest first (held ones excluded)."""
        return [entry.event for entry in self._pending.values()]

    def answer(self, response: pb.DeliverStreamResponse) -> Answer:
        """Record one response and say what follows from it.

        A response for an event not in flight (a duplicate answer after a re-send) is
        ignored: the caller sees exactly one final answer per event.
        """
        entry = self._pending.get(response.message_id)
        if entry is None:
            return Answer()
        if response.HasField("error") and response.error.code != 0:
            entry.failures += 1
            error = response.error
            if (
                self._policy.is_retryable_number(error.code)
                and entry.failures < self._policy.max_attempts
            ):
                delay = self._policy.backoff(
                    entry.failures, error.retry_after_seconds or None, self._rng
                )
                return Answer(retry=entry.event, retry_delay=delay)
        del self._pending[response.message_id]
        return Answer(final=response, release=self._release(response.message_id))

    def _release(self, message_id: str) -> pb.Event | None:
        queue = self._held.get(message_id)
        if not queue:
            return None
        event = queue.popleft()
        self._held_count -= 1
        if not queue:
            del self._held[message_id]
        self._pending[message_id] = _Entry(event)
        return event
