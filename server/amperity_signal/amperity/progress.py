"""Where one call to Amperity stands, so that a cancelled caller can say whether it was sent.

``RetryingCaller.call`` moves a ``CallProgress`` along as the call goes: waiting for a
connection from the pool, for a rate-limit slot, opening a connection, sending, answered,
or backing off before the next attempt. Each move is one attribute write, so following a
call costs next to nothing; the object is only read when the call is cancelled.

A transport hears of it through the request extension ``PROGRESS``. A transport that says
nothing (``httpx.MockTransport``, an ASGI transport) leaves an attempt at ``SENDING`` from
the moment it is handed the request, since from outside it may have written it at once.
``AiohttpTransport`` knows better: ``CONNECTING`` until it has a connection (not a byte
written yet), ``SENDING`` from then on, ``ANSWERED`` once the status line has arrived.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

PROGRESS = "amperity_signal.progress"
"""The ``httpx.Request`` extension holding the call's ``CallProgress``."""


class Stage(enum.Enum):
    """What an attempt is doing; before ``SENDING`` nothing of it has left the process."""

    POOL = "waiting for a connection from the pool"
    RATE_LIMIT = "waiting for a rate-limit slot"
    CONNECTING = "opening a connection"
    SENDING = "sent, waiting for the answer"
    ANSWERED = "answered"
    BACKOFF = "waiting to retry"


@dataclass(slots=True)
class CallProgress:
    """One logical call's progress, attempt by attempt.

    Attributes:
        attempt: The attempt under way or waited for (1 is the first request).
        stage: What that attempt is doing.
        status: The status Amperity answered the latest attempt with (0: no answer). In
            ``BACKOFF`` it is the previous attempt's; it is reset when an attempt is sent.
        unanswered: The latest earlier attempt that may have reached Amperity without an
            answer coming back (a timeout or a dropped connection after it was sent), or 0.
    """

    attempt: int = 1
    stage: Stage = Stage.POOL
    status: int = 0
    unanswered: int = 0
