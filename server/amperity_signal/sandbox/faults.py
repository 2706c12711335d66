"""Fault injection: statuses, latency, holds, dropped connections, cut and oversized bodies, 429s.

A fault matches requests by ``tenant`` (the ``Amperity-Tenant`` header; None = any) and
``kind`` (``events``, ``lookup``, ``profile``; None = any). Several can be active; for each
request every matching fault, in the order they were added, is consulted:

1. ``count``: each matching request uses one; at zero the fault is removed (None = forever).
2. ``latency_ms`` is added with probability ``latency_rate`` (default 1). ``hold`` keeps
   the request waiting, after any latency, until ``POST /_sandbox/release`` (or a reset)
   lets every held request go on, or ``HOLD_LIMIT_SECONDS`` passed: a request in flight
   for as long as a test needs, without waiting out a fixed latency.
3. The first fault that fires decides the answer: ``drop_rate`` closes the connection
   without a response; ``burst_429`` answers 429 to the next N matching requests;
   ``status`` answers that status with probability ``rate`` (default 1), with a
   ``Retry-After`` header when ``retry_after`` is set.
4. ``cut_body_rate`` cuts, with that probability, whatever answer the request gets: its
   status line and headers go out whole, then half its body, then the connection closes.
   It changes how the answer is sent, not which answer, so it is drawn apart from 3 and
   only by the faults that have it (a drop still sends nothing).
5. ``accept_status`` (200..299, not 202 or 204) answers an event the API accepted and
   published with that status instead of 202, as an Amperity (or something in front of
   it) answering a success it does not document would: the event is still ingested.
   Only events are answered 202, so only they are changed; the first such fault wins.
6. ``oversized_body`` (bytes) sends whatever answer the request gets (its status and
   headers) with a body of that many bytes instead of its own, gzip-encoded (``Content-
   Encoding: gzip``, that many bytes once decoded) with ``oversized_gzip``: a misbehaving
   server or proxy, or a decompression bomb, against the client's cap on an answer. The
   first such fault wins; it is not drawn (``count`` limits it).

``Retry-After`` is delta-seconds, a whole number (RFC 9110): a fractional ``retry_after``
is rounded up when the fault is added, so a client that obeys the header never comes back
sooner than the fault asked, and the fault lists the value it sends.

Draws come from the sandbox's seeded :class:`random.Random`.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from amperity_signal.config_values import closest

KINDS = ("events", "lookup", "profile")
# How long a ``hold`` keeps a request at most, when nothing releases it (a forgotten hold
# must not hang its client forever): the longest ``latency_ms`` a fault may set.
HOLD_LIMIT_SECONDS = 120.0
# 1 GiB: far past any client's cap, and sent in pieces, never held (gzip: about 1 MiB).
MAX_OVERSIZED_BODY = 1 << 30


class FaultSpecError(ValueError):
    """A fault description that cannot be used; the message says which field is wrong."""


@dataclass
class Fault:
    """One active fault and what is left of its ``count`` and ``burst_429``."""

    fault_id: int
    status: int | None = None
    rate: float = 1.0
    latency_ms: float = 0.0
    latency_rate: float = 1.0
    drop_rate: float = 0.0
    cut_body_rate: float = 0.0
    burst_429: int = 0
    tenant: str | None = None
    kind: str | None = None
    count: int | None = None
    retry_after: int | None = None
    accept_status: int | None = None
    hold: bool = False
    oversized_body: int | None = None
    oversized_gzip: bool = False

    @classmethod
    def from_json(cls, raw: Mapping[str, Any], fault_id: int) -> Fault:
        """Validates a ``POST /_sandbox/faults`` body.

        Raises:
            FaultSpecError: A field has the wrong type or range, or the fault does nothing.
        """
        fields = tuple(f for f in cls.__dataclass_fields__ if f != "fault_id")
        unknown = set(raw) - set(fields)
        if unknown:
            guesses = {name: closest(name, fields) for name in sorted(unknown)}
            meant = [f"{name} -> {guess}" for name, guess in guesses.items() if guess]
            raise FaultSpecError(
                f"unknown fault fields: {sorted(unknown)}"
                + (f" (did you mean: {', '.join(meant)}?)" if meant else "")
                + f"; the fields are {', '.join(fields)}"
            )
        fault = cls(fault_id=fault_id, **raw)
        _check_field(
            fault.status is None or _is_int(fault.status, 400, 599),
            fault,
            "status",
            "a whole number in 400..599",
        )
        for name in ("rate", "latency_rate", "drop_rate", "cut_body_rate"):
            _check_field(
                _is_number(getattr(fault, name), 0.0, 1.0), fault, name, "a number in 0..1"
            )
        _check_field(
            fault.accept_status is None
            or (_is_int(fault.accept_status, 200, 299) and fault.accept_status not in (202, 204)),
            fault,
            "accept_status",
            "a whole number in 200..299 other than 202 and 204 (the statuses Amperity documents)",
        )
        _check_field(
            fault.oversized_body is None or _is_int(fault.oversized_body, 1, MAX_OVERSIZED_BODY),
            fault,
            "oversized_body",
            f"a size in bytes, a whole number in 1..{MAX_OVERSIZED_BODY}",
        )
        _check_field(
            isinstance(fault.oversized_gzip, bool)
            and (fault.oversized_body is not None or not fault.oversized_gzip),
            fault,
            "oversized_gzip",
            "true or false, with oversized_body (the size once decoded)",
        )
        _check_field(
            _is_number(fault.latency_ms, 0.0, 120_000.0),
            fault,
            "latency_ms",
            "a number of milliseconds in 0..120000",
        )
        _check_field(
            _is_int(fault.burst_429, 0, 1_000_000),
            fault,
            "burst_429",
            "a whole number of requests in 0..1000000",
        )
        _check_field(isinstance(fault.hold, bool), fault, "hold", "true or false")
        _check_field(
            fault.count is None or _is_int(fault.count, 1, 1_000_000_000),
            fault,
            "count",
            "a whole number of requests in 1..1000000000, or null for no limit",
        )
        _check_field(
            fault.kind is None or fault.kind in KINDS,
            fault,
            "kind",
            f"one of {', '.join(KINDS)}, or null for any",
        )
        _check_field(
            fault.tenant is None or isinstance(fault.tenant, str),
            fault,
            "tenant",
            "a tenant id string, or null for any",
        )
        _check_field(
            fault.retry_after is None or _is_number(fault.retry_after, 0.0, 86_400.0),
            fault,
            "retry_after",
            "seconds, 0..86400 (a fraction is rounded up to whole seconds)",
        )
        if fault.retry_after is not None:
            fault.retry_after = math.ceil(fault.retry_after)
        _check(
            _does_something(fault),
            "set at least one of status, latency_ms, hold, drop_rate, cut_body_rate, "
            "burst_429, accept_status, oversized_body",
        )
        return fault

    def to_json(self) -> dict[str, Any]:
        """The fault as ``GET /_sandbox/faults`` lists it (``id`` plus the POSTed fields)."""
        body = asdict(self)
        return {"id": body.pop("fault_id"), **body}

    def matches(self, tenant: str | None, kind: str) -> bool:
        """Tells whether this fault applies to a request of ``kind`` for ``tenant``."""
        return (self.tenant is None or self.tenant == tenant) and self.kind in (None, kind)


@dataclass(frozen=True)
class FaultOutcome:
    """What the faults decided for one request."""

    delay_seconds: float = 0.0
    drop: bool = False
    status: int | None = None
    retry_after: int | None = None
    cut_body: bool = False
    accept_status: int | None = None
    hold: bool = False
    oversized_body: int | None = None
    oversized_gzip: bool = False


class FaultInjector:
    """The active faults and the seeded draws that decide when they fire."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._faults: list[Fault] = []
        self._next_id = 1

    def add(self, raw: Mapping[str, Any]) -> Fault:
        """Adds a fault from its JSON description (see :meth:`Fault.from_json`)."""
        try:
            fault = Fault.from_json(raw, self._next_id)
        except TypeError as error:
            raise FaultSpecError(str(error)) from error
        self._next_id += 1
        self._faults.append(fault)
        return fault

    def clear(self) -> int:
        """Removes every fault and says how many there were."""
        count = len(self._faults)
        self._faults.clear()
        return count

    def active(self) -> list[Fault]:
        """The active faults, oldest first."""
        return list(self._faults)

    def decide(self, tenant: str | None, kind: str) -> FaultOutcome:
        """Consults the matching faults for one request (see the module docstring)."""
        delay = 0.0
        drop = False
        status: int | None = None
        retry_after: int | None = None
        cut_body = False
        accept_status: int | None = None
        hold = False
        oversized: Fault | None = None
        for fault in [f for f in self._faults if f.matches(tenant, kind)]:
            if fault.count is not None:
                fault.count -= 1
            if fault.latency_ms and self._rng.random() < fault.latency_rate:
                delay += fault.latency_ms / 1000.0
            hold = hold or fault.hold
            if not drop and status is None:
                if fault.drop_rate and self._rng.random() < fault.drop_rate:
                    drop = True
                elif fault.burst_429 > 0:
                    fault.burst_429 -= 1
                    status, retry_after = 429, fault.retry_after
                elif fault.status and self._rng.random() < fault.rate:
                    status, retry_after = fault.status, fault.retry_after
            # Drawn only when set, so adding the field left every seeded run as it was.
            if not cut_body and fault.cut_body_rate:
                cut_body = self._rng.random() < fault.cut_body_rate
            if accept_status is None:
                accept_status = fault.accept_status
            if oversized is None and fault.oversized_body is not None:
                oversized = fault
        self._faults = [f for f in self._faults if not _exhausted(f)]
        return FaultOutcome(
            delay,
            drop,
            status,
            retry_after,
            cut_body and not drop,
            accept_status,
            hold,
            oversized_body=oversized.oversized_body if oversized else None,
            oversized_gzip=oversized.oversized_gzip if oversized else False,
        )


class Holds:
    """The requests a ``hold`` fault keeps waiting, each until it is released."""

    def __init__(self) -> None:
        self._held: set[asyncio.Future[None]] = set()

    def hold(self) -> asyncio.Future[None]:
        """A future done when the request is released; cancel it when the wait ends otherwise."""
        released: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._held.add(released)
        released.add_done_callback(self._held.discard)
        return released

    def release(self) -> int:
        """Lets every held request go on; says how many there were (0 is fine)."""
        held = [released for released in self._held if not released.done()]
        for released in held:
            released.set_result(None)
        return len(held)


def _exhausted(fault: Fault) -> bool:
    if fault.count is not None and fault.count <= 0:
        return True
    return not _does_something(fault)


def _does_something(fault: Fault) -> bool:
    return bool(
        fault.status
        or fault.latency_ms
        or fault.hold
        or fault.drop_rate
        or fault.cut_body_rate
        or fault.burst_429
        or fault.accept_status
        or fault.oversized_body
    )


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise FaultSpecError(message)


def _check_field(condition: bool, fault: Fault, name: str, expected: str) -> None:
    """Unless ``condition``, refuse ``fault``'s field ``name``: what it takes, what it got.

    "count: >= 1" answered a count of 1.5, and "burst_429: a count >= 0" one of 1e20.
    """
    if not condition:
        raise FaultSpecError(f"{name}: {expected}, not {_shown(getattr(fault, name))}")


def _shown(value: object) -> str:
    """A sent value as JSON writes it (lone surrogates escaped), cut to 40 characters."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else "a number beyond a double's range"
    text = json.dumps(value)
    return text if len(text) <= 40 else f"{text[:40]}..."


def _is_number(value: object, low: float, high: float) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and low <= value <= high


def _is_int(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
