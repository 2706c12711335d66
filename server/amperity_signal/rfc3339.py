"""An RFC 3339 date-time string as a protobuf Timestamp's seconds and nanos.

The grammar and the words of the clients (``clients/python/amperity_signal_client/
timestamps.py``, ``clients/node/lib/events.js``), pinned against their shared cases
``clients/testdata/timestamps.json`` by ``tests/unit/test_timestamp_parity.py``:

- RFC 3339 §5.6 ``date-time``: ``2025-01-31T12:00:00``, a ``.`` fraction of any length,
  then ``Z`` or ``±hh:mm``; ``t`` and ``z`` may be lowercase and a space may stand for
  the ``T`` (the note in §5.6). One extension: without an offset it is UTC.
- The fraction is kept to nanoseconds (what a Timestamp holds); further digits are cut.
- A date or time that does not exist (Feb 30, ``24:00:00``, a leap second ``23:59:60``),
  an offset past ±23:59, or an instant outside 0001-01-01T00:00:00Z to
  9999-12-31T23:59:59.999999999Z in UTC is refused, saying why.

The server package cannot import the client package (it ships alone), so the grammar
lives here once for the server; the parity test keeps the two in step.
"""

from __future__ import annotations

import re
from datetime import datetime

EXAMPLE = "such as 2025-01-31T12:00:00.000Z"
_DATE_TIME = re.compile(
    r"""
    \d{4} - \d{2} - \d{2}               # full-date
    [Tt\ ]                              # T, t or (the note in 5.6) a space
    \d{2} : \d{2} : \d{2}               # partial-time, seconds required
    (?: \. (\d+) )?                     # time-secfrac: a dot and at least one digit
    ( [Zz] | [+-] \d{2} : \d{2} )?      # time-offset; none is UTC (our one extension)
    """,
    re.ASCII | re.VERBOSE,
)
_LOCAL_END = len("2025-01-31T12:00:00")
_EPOCH = datetime(1970, 1, 1)
_DAY = 86_400
# The seconds of 0001-01-01T00:00:00Z and of 9999-12-31T23:59:59Z, a Timestamp's range.
_MIN_SECONDS = -62_135_596_800
_MAX_SECONDS = 253_402_300_799


class TimestampError(ValueError):
    """Why a string is not a date-time a Timestamp holds; worded to follow a field name."""


def timestamp_parts(text: object) -> tuple[int, int]:
    """``text``, an RFC 3339 date-time string (no offset means UTC), as ``(seconds, nanos)``.

    The one reading of an event's own ``timestamp`` (and of ``consentedAt``), for the
    gateway and for ``blueprint test --events`` alike, so a dry run refuses what the
    gateway refuses, in the same words.

    Raises:
        TimestampError: Not a string, not RFC 3339, a date or time that does not exist,
            an offset out of range, or an instant out of a Timestamp's range; the
            message (the clients' words) starts with a verb, to follow the field's name.
    """
    if not isinstance(text, str):
        raise TimestampError(f"must be an RFC 3339 string {EXAMPLE}.")
    match = _DATE_TIME.fullmatch(text)
    if match is None:
        raise TimestampError(f"is not an RFC 3339 date-time {EXAMPLE}.")
    try:
        # The shape is RFC 3339's (matched above), so this only checks that the date and
        # time exist, in datetime's words as the clients quote them; it is C, hence fast.
        delta = datetime.fromisoformat(text[:_LOCAL_END]) - _EPOCH
    except ValueError as error:
        raise TimestampError(f"is not an RFC 3339 date-time {EXAMPLE} ({error}).") from None
    seconds = delta.days * _DAY + delta.seconds
    fraction, zone = match.groups()
    if zone is not None and len(zone) > 1:
        offset_hours, offset_minutes = int(zone[1:3]), int(zone[4:])
        if offset_hours > 23 or offset_minutes > 59:
            raise TimestampError(
                f"has an offset out of range ({zone}): send one between -23:59 and +23:59, "
                f"{EXAMPLE}."
            )
        offset = offset_hours * 3600 + offset_minutes * 60
        seconds += offset if zone[0] == "-" else -offset
    if not _MIN_SECONDS <= seconds <= _MAX_SECONDS:
        raise TimestampError(
            "is out of the range a Timestamp holds, 0001-01-01T00:00:00Z to "
            "9999-12-31T23:59:59.999999999Z in UTC."
        )
    return seconds, int(fraction[:9].ljust(9, "0")) if fraction else 0
