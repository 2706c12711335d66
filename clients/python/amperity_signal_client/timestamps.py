"""An event's ``timestamp``: an RFC 3339 date-time string (or a datetime) as Timestamp parts.

Both clients read a string by the same rules, pinned by the shared cases in
``clients/testdata/timestamps.json``:

- RFC 3339 §5.6 ``date-time``: ``2025-01-31T12:00:00``, a fraction of any length
  (``.250``), then ``Z`` or ``±hh:mm``; ``T`` and ``Z`` may be lowercase, and a space may
  stand for the ``T`` (the note in §5.6). One extension: without an offset it is UTC.
- Nothing else: no date alone, no time without seconds, no ``,`` fraction, no ``+0100``
  or ``+01`` offset, no ISO 8601 week or ordinal date.
- A fraction is kept to nanoseconds (what a Timestamp holds); further digits are cut.
- No leap second: ``23:59:60`` is refused (``second must be in 0..59``), as protobuf's
  Timestamp, which smears leap seconds, has no such instant; send ``23:59:59``.
- The instant, in UTC, must lie in 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z,
  the range of a Timestamp; year 0000 is refused.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from amperity_signal_client.fields import EventFieldError, type_name

EXAMPLE = "such as 2025-01-31T12:00:00.000Z"
_RFC_3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?"
    r"([Zz]|([+-])(\d{2}):(\d{2}))?",
    re.ASCII,
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The seconds of 0001-01-01T00:00:00Z and of 9999-12-31T23:59:59Z, a Timestamp's range.
MIN_SECONDS = -62_135_596_800
MAX_SECONDS = 253_402_300_799


def timestamp_parts(value: Any, field: str = "timestamp") -> tuple[int, int]:
    """``value`` as a Timestamp's ``(seconds, nanos)``.

    Args:
        value: An RFC 3339 string (no offset means UTC) or a datetime (naive means UTC).
        field: The path errors name it by.

    Raises:
        EventFieldError: Naming ``field`` and why: not a string, not RFC 3339, a date or
            time that does not exist, an offset out of range, or out of a Timestamp's range.
    """
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        delta = moment - _EPOCH
        return _in_range(delta.days * 86_400 + delta.seconds, field), delta.microseconds * 1_000
    if not isinstance(value, str):
        raise EventFieldError(
            field, f"must be an RFC 3339 string {EXAMPLE}, not {type_name(value)}."
        )
    match = _RFC_3339.fullmatch(value)
    if match is None:
        raise EventFieldError(field, f"is not an RFC 3339 date-time {EXAMPLE}.")
    year, month, day, hour, minute, second = (int(part) for part in match.group(1, 2, 3, 4, 5, 6))
    try:
        # datetime's own words ("day is out of range for month"), which the Node client uses.
        local = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError as error:
        raise EventFieldError(field, f"is not an RFC 3339 date-time {EXAMPLE} ({error}).") from None
    sign, offset_hours, offset_minutes = match.group(9, 10, 11)
    offset = 0
    if sign is not None:
        if int(offset_hours) > 23 or int(offset_minutes) > 59:
            raise EventFieldError(
                field,
                f"has an offset out of range ({match.group(8)}): send one between -23:59 "
                f"and +23:59, {EXAMPLE}.",
            )
        offset = (-1 if sign == "-" else 1) * (int(offset_hours) * 3600 + int(offset_minutes) * 60)
    seconds = _in_range((local - _EPOCH) // timedelta(seconds=1) - offset, field)
    fraction = match.group(7) or ""
    return seconds, int(fraction[:9].ljust(9, "0"))


def _in_range(seconds: int, field: str) -> int:
    """``seconds`` when a Timestamp holds them (years 1 to 9999 in UTC), else an error."""
    if not MIN_SECONDS <= seconds <= MAX_SECONDS:
        raise EventFieldError(
            field,
            "is out of the range a Timestamp holds, 0001-01-01T00:00:00Z to "
            "9999-12-31T23:59:59.999999999Z in UTC.",
        )
    return seconds
