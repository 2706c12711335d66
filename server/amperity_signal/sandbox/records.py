"""What the inspector shows: recent requests, received events and counters.

Requests are kept with their headers, except that ``Authorization`` is recorded as
``Bearer <fp:…>`` (the first 12 hex of the token's SHA-256): the raw token is never stored.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from amperity_signal.sandbox.profiles import iso
from amperity_signal.sandbox.tokens import fingerprint

DROPPED = 0
T = TypeVar("T")


def redact_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Headers as recorded: lower-case names, ``Authorization`` reduced to a fingerprint."""
    recorded: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        recorded[key] = _redact_authorization(value) if key == "authorization" else value
    return recorded


def _redact_authorization(value: str) -> str:
    scheme, _, token = value.partition(" ")
    if scheme.lower() == "bearer":
        return f"Bearer <fp:{fingerprint(token.strip())}>"
    return f"<fp:{fingerprint(value)}>"


@dataclass
class RequestRecord:
    """One API request; ``status`` 0 means the connection was dropped unanswered.

    ``body_cut``: a fault sent the status line and headers, then cut the body.
    ``message_id``: an event POST's top-level ``message_id`` (a string, cut to 200
    characters), whatever the answer, so that every attempt at one event can be told
    apart (a retry, a re-send); None for other requests and bodies without one.
    """

    request_id: str
    timestamp: float
    method: str
    path: str
    query: str
    kind: str
    tenant: str | None
    headers: dict[str, str]
    status: int = DROPPED
    body_cut: bool = False
    duration_ms: float = 0.0
    message_id: str | None = None

    def arrival_json(self) -> dict[str, Any]:
        """What is known of the request on arrival, as ``GET /_sandbox/in_flight`` lists it."""
        return {
            "request_id": self.request_id,
            "timestamp": self.timestamp,
            "time": iso(self.timestamp),
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "kind": self.kind,
            "tenant": self.tenant,
            "headers": self.headers,
            "message_id": self.message_id,
        }

    def to_json(self) -> dict[str, Any]:
        """The record as ``GET /_sandbox/requests`` lists it: its arrival, then its answer."""
        return {
            **self.arrival_json(),
            "status": self.status,
            "dropped": self.status == DROPPED,
            "body_cut": self.body_cut,
            "duration_ms": round(self.duration_ms, 3),
        }


@dataclass(frozen=True)
class EventRecord:
    """One event body received on a stream, and where routing sent it."""

    stream_id: str
    tenant: str
    received_at: float
    status: int
    mode: str
    routed_to: str | None
    body: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        """The record as ``GET /_sandbox/events`` lists it."""
        return {
            "stream": self.stream_id,
            "tenant": self.tenant,
            "received_at": iso(self.received_at),
            "status": self.status,
            "mode": self.mode,
            "routed_to": self.routed_to,
            "body": self.body,
        }


class RingLog(Generic[T]):
    """A bounded buffer of the most recent records."""

    def __init__(self, capacity: int) -> None:
        self._items: deque[T] = deque(maxlen=capacity)

    def add(self, item: T) -> None:
        """Appends a record, forgetting the oldest when full."""
        self._items.append(item)

    def items(self) -> list[T]:
        """All records, oldest first."""
        return list(self._items)

    def clear(self) -> None:
        """Forgets everything."""
        self._items.clear()


@dataclass
class _Counts:
    total: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    by_status: Counter[str] = field(default_factory=Counter)
    body_cut: int = 0

    def add(self, record: RequestRecord) -> None:
        self.total += 1
        self.by_kind[record.kind] += 1
        self.by_status["dropped" if record.status == DROPPED else str(record.status)] += 1
        self.body_cut += record.body_cut

    def to_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "by_kind": dict(self.by_kind),
            "by_status": dict(sorted(self.by_status.items())),
            "throttled": self.by_status["429"],
            "dropped": self.by_status["dropped"],
            "body_cut": self.body_cut,
        }


class Stats:
    """Counters of answered API requests, overall and per tenant, since start or reset."""

    def __init__(self) -> None:
        self._overall = _Counts()
        self._tenants: dict[str, _Counts] = {}

    def add(self, record: RequestRecord) -> None:
        """Counts one finished request."""
        self._overall.add(record)
        tenant = record.tenant or "-"
        self._tenants.setdefault(tenant, _Counts()).add(record)

    def count_cut(self, record: RequestRecord) -> None:
        """Counts the cut of a request's body, after the request itself was counted."""
        self._overall.body_cut += 1
        self._tenants.setdefault(record.tenant or "-", _Counts()).body_cut += 1

    def to_json(self) -> dict[str, Any]:
        """``{total, by_kind, by_status, throttled, dropped, body_cut, tenants: {id: {same}}}``."""
        return {
            **self._overall.to_json(),
            "tenants": {name: counts.to_json() for name, counts in sorted(self._tenants.items())},
        }
