"""``event_from_datafly_json``: Datafly's camelCase JSON event to the engine's event dict.

Used by ``blueprint test --events FILE`` and the HTTP gateway's collector routes. Keys are
converted to snake_case except where they are user data: ``properties``, ``traits``,
``partner_attrs`` and consent ``categories`` keep their keys verbatim. snake_case input is
accepted too, so converting twice changes nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from amperity_signal.errors import FieldViolation, InvalidEvent

_TOP_LEVEL = {
    "messageId": "message_id",
    "anonymousId": "anonymous_id",
    "canonicalId": "canonical_id",
    "userId": "user_id",
    "partnerAttrs": "partner_attrs",
    "amperityId": "amperity_id",
}
_VERBATIM_TOP = ("type", "event", "properties", "traits")
_SNAKE_FIELDS = frozenset(
    {"message_id", "anonymous_id", "canonical_id", "user_id", "partner_attrs", "amperity_id"}
)
_CONTEXT_VERBATIM = frozenset({"traits"})


def camel_to_snake(name: str) -> str:
    """Convert one camelCase key to snake_case (``postalCode`` -> ``postal_code``)."""
    chars = []
    for index, char in enumerate(name):
        if char.isupper():
            if index and name[index - 1] != "_":
                chars.append("_")
            chars.append(char.lower())
        else:
            chars.append(char)
    return "".join(chars)


def _snake_keys(value: Mapping[str, Any]) -> dict[str, Any]:
    """Convert a dict's keys, and its nested dicts' keys, to snake_case."""
    return {
        camel_to_snake(str(key)): _snake_keys(item) if isinstance(item, Mapping) else item
        for key, item in value.items()
    }


def _consent(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Convert ``context.consent``, keeping the CMP's category codes verbatim."""
    consent: dict[str, Any] = {}
    for key, value in raw.items():
        name = camel_to_snake(str(key))
        if name == "categories" and isinstance(value, Mapping):
            consent[name] = dict(value)
        elif isinstance(value, Mapping):
            consent[name] = _snake_keys(value)
        else:
            consent[name] = value
    return consent


def _context(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Convert ``context``: nested keys to snake_case, consent and traits handled apart."""
    context: dict[str, Any] = {}
    for key, value in raw.items():
        name = camel_to_snake(str(key))
        if name == "consent" and isinstance(value, Mapping):
            context[name] = _consent(value)
        elif name in _CONTEXT_VERBATIM or not isinstance(value, Mapping):
            context[name] = value
        else:
            context[name] = _snake_keys(value)
    return context


def _timestamp(value: Any) -> datetime | None:
    """Parse an ISO 8601 timestamp into an aware UTC datetime (naive means UTC).

    Raises:
        InvalidEvent: The value is not an ISO 8601 string, or is out of range in UTC.
    """
    if value is None or value == "":
        return None
    moment: datetime | None = value if isinstance(value, datetime) else None
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            moment = datetime.fromisoformat(value.strip())
    if moment is None:
        raise _bad_timestamp(f"{value!r} is not an ISO 8601 timestamp")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 is in year 0 in UTC
        raise _bad_timestamp(f"{value!r} is outside the years 1-9999 in UTC") from None


def _bad_timestamp(problem: str) -> InvalidEvent:
    """The InvalidEvent for a timestamp that cannot be read, with an example to send."""
    return InvalidEvent(
        [FieldViolation("timestamp", f"{problem}; send e.g. '2026-04-17T15:37:10.484Z'")]
    )


def event_from_datafly_json(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Convert one Datafly JSON event (camelCase) to the engine's event dict.

    Args:
        obj: The decoded JSON event.

    Returns:
        The event dict: snake_case keys, ``timestamp`` as an aware UTC datetime,
        ``canonical_id`` defaulted to ``anonymous_id``.

    Raises:
        InvalidEvent: The timestamp is not ISO 8601.
    """
    event: dict[str, Any] = {key: obj[key] for key in _VERBATIM_TOP if key in obj}
    for key, value in obj.items():
        name = _TOP_LEVEL.get(key) or (key if key in _SNAKE_FIELDS else None)
        if name is not None and value is not None:
            event[name] = value
    context = obj.get("context")
    if isinstance(context, Mapping):
        event["context"] = _context(context)
    event["timestamp"] = _timestamp(obj.get("timestamp"))
    if not event.get("canonical_id") and event.get("anonymous_id"):
        event["canonical_id"] = event["anonymous_id"]
    return event
