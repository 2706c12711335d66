"""``event_from_datafly_json``: Datafly's camelCase JSON event to the engine's event dict.

For Python callers of ``dry_run``. It reads ``timestamp`` by the gateway's
``amperity_signal.rfc3339`` but checks nothing else the gateway or Deliver would refuse;
``blueprint test --events FILE`` takes each event through their own code instead
(``amperity_signal.dry_run_events``, which the blueprint engine may not import: it
reaches the gateway, hence grpc).

Keys are converted to snake_case except where they are user data: ``properties``,
``traits``, ``partner_attrs`` and consent ``categories`` keep their keys verbatim.
snake_case input is accepted too, so converting twice changes nothing. ``context.traits``
(Segment-style identity) is folded into ``traits``, as the gateway and the clients fold it:
the service's events have no ``context.traits``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from amperity_signal import rfc3339
from amperity_signal.casing import camel_to_snake
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
_CONTEXT_TRAITS = "traits"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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


def _context(raw: Mapping[str, Any], folded: bool) -> dict[str, Any]:
    """Convert ``context``: nested keys to snake_case, consent handled apart.

    ``traits`` is left out when ``folded`` into the event's (``event_from_datafly_json``).
    """
    context: dict[str, Any] = {}
    for key, value in raw.items():
        name = camel_to_snake(str(key))
        if name == "consent" and isinstance(value, Mapping):
            context[name] = _consent(value)
        elif folded and key == _CONTEXT_TRAITS:
            continue
        elif not isinstance(value, Mapping):
            context[name] = value
        else:
            context[name] = _snake_keys(value)
    return context


def folded_traits(traits: Mapping[str, Any] | None, identity: Mapping[str, Any]) -> dict[str, Any]:
    """An event's ``traits`` with its ``context.traits`` folded in; the event's own win.

    A key ``traits`` holds, not null, is kept where it is; any other is taken from
    ``identity``, in its order, after them: what the gateway's converter
    (``gateway/convert.fold_context_traits``) makes of the two, as a dict.
    """
    folded = dict(traits or {})
    for key, value in identity.items():
        if folded.get(key) is None:
            folded[key] = value
    return folded


def _timestamp(value: Any) -> datetime | None:
    """The event's own ``timestamp`` as an aware UTC datetime, read as the gateway reads it.

    A string is read by ``amperity_signal.rfc3339``, the gateway's (and the clients')
    grammar, to the datetime the service makes of the gateway's Timestamp (nanoseconds
    cut to microseconds): what the gateway refuses is refused here in its words. A
    datetime (a Python caller's, or an event converted before) is taken as it is, naive
    meaning UTC.

    Raises:
        InvalidEvent: Naming ``timestamp``, why and what to send.
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        try:
            return moment.astimezone(UTC)
        except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 is in year 0 in UTC
            raise _bad_timestamp(
                f"{value!r} is outside the years 1-9999 in UTC; send e.g. "
                "'2026-04-17T15:37:10.484Z'"
            ) from None
    try:
        seconds, nanos = rfc3339.timestamp_parts(value)
    except rfc3339.TimestampError as error:
        raise _bad_timestamp(str(error)) from None
    return _EPOCH + timedelta(seconds=seconds, microseconds=nanos // 1000)


def _bad_timestamp(problem: str) -> InvalidEvent:
    """The InvalidEvent for a timestamp that cannot be read."""
    return InvalidEvent([FieldViolation("timestamp", problem)])


def event_from_datafly_json(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Convert one Datafly JSON event (camelCase) to the engine's event dict.

    Args:
        obj: The decoded JSON event.

    Returns:
        The event dict: snake_case keys, ``timestamp`` as an aware UTC datetime,
        ``canonical_id`` defaulted to ``anonymous_id``.

    Raises:
        InvalidEvent: The timestamp is one the gateway refuses (``amperity_signal.rfc3339``).
    """
    event: dict[str, Any] = {key: obj[key] for key in _VERBATIM_TOP if key in obj}
    for key, value in obj.items():
        name = _TOP_LEVEL.get(key) or (key if key in _SNAKE_FIELDS else None)
        if name is not None and value is not None:
            event[name] = value
    context = obj.get("context")
    if isinstance(context, Mapping):
        identity = context.get(_CONTEXT_TRAITS)
        traits = event.get("traits")
        # An object into an object, or into none; anything else is kept where it was, as
        # this converter refuses nothing (the gateway refuses a traits that is no object).
        folded = isinstance(identity, Mapping) and (traits is None or isinstance(traits, Mapping))
        event["context"] = _context(context, folded)
        if folded and identity:
            event["traits"] = folded_traits(traits, identity)
    event["timestamp"] = _timestamp(obj.get("timestamp"))
    if not event.get("canonical_id") and event.get("anonymous_id"):
        event["canonical_id"] = event["anonymous_id"]
    return event
