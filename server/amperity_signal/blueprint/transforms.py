"""Value transforms a mapping may apply, by name, in order.

Each transform takes one non-empty value and returns the converted value, or raises
:class:`TransformError` when the value cannot be converted (the engine then omits the
target and records a warning). ``TRANSFORMS`` is the read-only registry, looked up once
when a blueprint is compiled.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from amperity_signal.blueprint.errors import TransformError
from amperity_signal.blueprint.items import INT64_MAX, INT64_MIN, normalise_items
from amperity_signal.phone import normalise_phone

Transform = Callable[[Any], Any]

_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")
_TRUE_WORDS = frozenset({"true", "1", "yes", "y", "on"})
_FALSE_WORDS = frozenset({"false", "0", "no", "n", "off"})
# Epoch numbers above this are taken as milliseconds (1e11 seconds is the year 5138).
_EPOCH_MS_THRESHOLD = 1e11
_FOUR_DIGIT_YEAR = 1000


def _text(value: Any) -> str:
    """Render a scalar as text; integral floats (Struct numbers) lose their ``.0``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TransformError(f"{value!r} is not a finite number")
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str | int):
        return str(value)
    raise TransformError(f"expected a scalar, got {type(value).__name__}")


def lowercase(value: Any) -> str:
    """Lower-case the value's text."""
    return _text(value).lower()


def uppercase(value: Any) -> str:
    """Upper-case the value's text."""
    return _text(value).upper()


def trim(value: Any) -> str:
    """Strip surrounding whitespace."""
    return _text(value).strip()


def to_string(value: Any) -> str:
    """Render a scalar as a string (``12345.0`` becomes ``"12345"``, True ``"true"``)."""
    return _text(value)


def sha256(value: Any) -> str:
    """Trim, lower-case, SHA-256, lower-case hex; an existing 64-hex digest is kept as is."""
    text = _text(value).strip()
    if _HEX_DIGEST.fullmatch(text):
        return text.lower()
    return hashlib.sha256(text.lower().encode("utf-8")).hexdigest()


def sha256_upper(value: Any) -> str:
    """Trim, upper-case, SHA-256, UPPER-case hex (Amperity's own convention)."""
    text = _text(value).strip()
    if _HEX_DIGEST.fullmatch(text):
        return text.upper()
    return hashlib.sha256(text.upper().encode("utf-8")).hexdigest().upper()


def e164(value: Any) -> str:
    """Normalise a phone number as the phone linking key's lookups do (``normalise_phone``)."""
    text = normalise_phone(_text(value))
    if text is None:
        raise TransformError(f"{value!r} is not a phone number")
    return text


def to_number(value: Any) -> int | float:
    """Convert to a JSON number; integral strings become ints, NaN/Infinity fail.

    An integer beyond the signed 64-bit range becomes a float (JSON's number), so the
    body can still be written.
    """
    if isinstance(value, bool):
        raise TransformError(f"{value!r} is a boolean, not a number")
    if isinstance(value, int):
        return value if INT64_MIN <= value <= INT64_MAX else _big_int_as_float(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TransformError(f"{value!r} is not a finite number")
        return value
    text = _text(value).strip()
    try:
        return to_number(int(text))
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        raise TransformError(f"{value!r} is not a number") from None
    if not math.isfinite(number):
        raise TransformError(f"{value!r} is not a finite number")
    return number


def _big_int_as_float(value: int) -> float:
    """An integer beyond 64 bits as a float; one beyond a float's range fails."""
    try:
        return float(value)
    except OverflowError:
        raise TransformError(f"{value} is too large a number") from None


def to_int(value: Any) -> int:
    """Convert to an integer, truncating toward zero (``"2.0"`` and ``2.7`` become 2).

    Fails beyond the signed 64-bit range (``1e20``), which no integer column can hold.
    """
    number = to_number(value)
    whole = number if isinstance(number, int) else int(number)
    if not INT64_MIN <= whole <= INT64_MAX:
        raise TransformError(f"{value!r} is outside the 64-bit integer range")
    return whole


def to_bool(value: Any) -> bool:
    """Convert booleans, 0/1 and words such as "yes"/"false" to a boolean."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
    raise TransformError(f"{value!r} is not a boolean")


def format_timestamp(moment: datetime) -> str:
    """Format a datetime as ISO 8601 UTC with milliseconds and ``Z`` (naive means UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    elif moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    if moment.year < _FOUR_DIGIT_YEAR:
        # strftime's %Y does not pad years below 1000 on every platform: keep its text.
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    # The same text as the strftime above, ~8x cheaper (every event has a timestamp).
    return "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ" % (  # noqa: UP031 - the fastest way here
        moment.year,
        moment.month,
        moment.day,
        moment.hour,
        moment.minute,
        moment.second,
        moment.microsecond // 1000,
    )


def iso8601(value: Any) -> str:
    """Convert a datetime, an ISO 8601 string or epoch seconds/ms to ``...T..:..:..mmmZ``.

    A moment outside years 1-9999 in UTC (epoch ``1e30``, ``0001-01-01T00:00:00+01:00``)
    fails like any other value that is not a timestamp.
    """
    try:
        return _iso8601(value)
    except TransformError:
        # A ValueError too, but already saying what is wrong ("is not an ISO 8601
        # timestamp"): it is no range error, so it must not be reworded as one.
        raise
    except (OverflowError, OSError, ValueError):
        # datetime's own range errors: year out of range, time_t overflow, UTC shift.
        raise TransformError(f"{value!r} is outside the years 1-9999 (UTC)") from None


def _iso8601(value: Any) -> str:
    """``iso8601`` without the range check (datetime raises its own errors)."""
    if isinstance(value, datetime):
        return format_timestamp(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise TransformError(f"{value!r} is not a timestamp")
        seconds = value / 1000 if abs(value) >= _EPOCH_MS_THRESHOLD else value
        return format_timestamp(datetime.fromtimestamp(seconds, tz=UTC))
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise TransformError(f"{value!r} is not an ISO 8601 timestamp") from None
        return format_timestamp(moment)
    raise TransformError(f"{value!r} is not a timestamp")


def items(value: Any) -> list[dict[str, Any]]:
    """Normalise a GA4 ``items[]``, Segment ``products[]`` or single-product dict."""
    normalised = normalise_items(value)
    if not normalised:
        raise TransformError("no product with an id, name or price was found")
    return normalised


TRANSFORMS: Mapping[str, Transform] = MappingProxyType(
    {
        "lowercase": lowercase,
        "uppercase": uppercase,
        "trim": trim,
        "sha256": sha256,
        "sha256_upper": sha256_upper,
        "e164": e164,
        "to_string": to_string,
        "to_number": to_number,
        "to_int": to_int,
        "to_bool": to_bool,
        "iso8601": iso8601,
        "items": items,
    }
)
"""Every transform a mapping may name, by name."""
