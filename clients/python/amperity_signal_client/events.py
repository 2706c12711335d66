"""Datafly's camelCase JSON events → the proto ``Event``, and Structs ↔ plain Python.

Every key is read under its camelCase name (``anonymousId``) or its snake_case alias
(``anonymous_id``). Unknown keys are ignored (Datafly events carry extras such as
``context.library``); ``null`` means absent; a known key of the wrong type raises
``ValueError`` naming the field. ``context.traits`` (Segment-style identity) is folded
into ``traits``, whose own keys win. Absent consent fields stay absent (proto3 ``optional``),
which Amperity reads as "no consent given".
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from google.protobuf import struct_pb2
from google.protobuf.message import Message

from amperity_signal_client.fields import EventFieldError, type_name
from amperity_signal_client.timestamps import timestamp_parts
from datafly.amperity.v1 import amperity_service_pb2 as pb

__all__ = [
    "EVENT_TYPES",
    "GOOGLE_CONSENT_VALUES",
    "ConsentLike",
    "EventFieldError",
    "camel",
    "consent_from_json",
    "dict_to_struct",
    "event_from_json",
    "not_a_string",
    "not_text",
    "struct_to_dict",
    "type_name",
    "value_to_python",
]

ConsentLike = Mapping[str, Any] | pb.Consent
"""A consent state: a dict in the nested shape events carry, or the proto ``Consent``."""

EVENT_TYPES = frozenset({"track", "page", "identify", "screen", "group", "alias"})
GOOGLE_CONSENT_VALUES = frozenset({"granted", "denied"})
_GOOGLE_FIELDS = ("ad_storage", "ad_user_data", "ad_personalization", "analytics_storage")
_EVENT_STRINGS = ("message_id", "event", "anonymous_id", "canonical_id", "user_id")
_CONTEXT_STRINGS = ("ip", "user_agent", "locale", "timezone")
_MAX_SAFE_INTEGER = 2**53 - 1
_SESSION_ID_TOO_LARGE = (
    "is a whole number too large to be exact in JavaScript (over 2**53 - 1): "
    "send it as a JSON string."
)
_SESSION_NUMBER_TOO_LARGE = "is too large (at most 2**53 - 1)."
_SUBMESSAGES: dict[str, tuple[str, ...]] = {
    "page": ("url", "path", "referrer", "title", "search"),
    "campaign": ("source", "medium", "name", "term", "content"),
    "geo": ("country", "region", "city", "postal_code"),
    "device": ("type", "os", "browser"),
}


def camel(name: str) -> str:
    """``postal_code`` → ``postalCode``."""
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


# Where a camelCase key's next word starts: after a lower-case letter or digit, or at the
# last capital of an acronym (GCLID stays one word). The service's amperity_signal.casing
# reads the same; tests/clients/test_client_events.py holds the two to each other.
_WORD_START = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def vendor_key(name: str) -> str:
    """A vendor id's key as the proto names it: ``gaClientId`` → ``ga_client_id``."""
    return name if name.islower() else _WORD_START.sub("_", name).lower()


def _get(data: Mapping[str, Any], name: str) -> Any:
    """The value under the camelCase name, else the snake_case one; None when absent."""
    value = data.get(camel(name))
    return data.get(name) if value is None else value


def not_a_string(value: object) -> str:
    """Why a field of an event refuses ``value``, in the Node client's words.

    Never converted: ``str(1.0)`` is ``"1.0"`` but the Node client's ``String(1.0)`` is
    ``"1"``, so a converted id would differ between the clients.
    """
    return f"must be a string, not {type_name(value)}: send it as a JSON string."


def _string(data: Mapping[str, Any], name: str, path: str) -> str | None:
    value = _get(data, name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise EventFieldError(f"{path}{camel(name)}", not_a_string(value))
    return value


def not_text(*values: str) -> str:
    r"""Why protobuf refused one of ``values`` for a string field: its lone surrogate.

    A JSON ``"\ud800"`` escape alone parses to one; UTF-8 cannot encode it, so protobuf
    refuses it (a ``UnicodeEncodeError``, or a plain ``ValueError`` in its pure-Python
    build) without naming the field. Strings are not checked ahead: the conversion sets
    each one and translates that error, so a well-formed event pays nothing for it.
    """
    for value in values:
        for position, character in enumerate(value):
            if "\ud800" <= character <= "\udfff":
                return (
                    f"holds {character!r} at position {position}, half of a UTF-16 "
                    "surrogate pair, which is not text: repair or drop the character."
                )
    return "is not text that UTF-8 can encode: repair or drop the character."


def _set_strings(target: Message, data: Mapping[str, Any], names: Iterable[str], path: str) -> None:
    """Set each of the string fields ``names`` that ``data`` holds on ``target``."""
    for name in names:
        value = _string(data, name, path)
        if value is not None:
            try:
                setattr(target, name, value)
            except ValueError:
                raise EventFieldError(f"{path}{camel(name)}", not_text(value)) from None


def _object(value: Any, field: str) -> Mapping[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise EventFieldError(field, f"must be a JSON object, not {type(value).__name__}.")
    return value


def event_from_json(obj: Any) -> pb.Event:
    """Convert one Datafly event (parsed JSON, camelCase) to the proto ``Event``.

    Args:
        obj: The parsed JSON of one event: ``type``, ``event``, ``anonymousId``,
            ``canonicalId``, ``userId``, ``messageId``, ``timestamp`` (RFC 3339),
            ``properties``, ``traits``, ``partnerAttrs`` and ``context``; a
            ``context.traits`` object fills in the ``traits`` the event does not hold
            (absent or null), as the gateway reads it.

    Returns:
        The event; fields absent from the JSON are left unset.

    Raises:
        EventFieldError: A ``ValueError`` naming the first field with a wrong type or
            value (its ``field`` attribute holds the path).
    """
    data = _object(obj, "event")
    if data is None:
        raise EventFieldError("event", "must be a JSON object, not null.")
    event = pb.Event()
    event_type = _string(data, "type", "")
    if event_type is not None:
        if event_type not in EVENT_TYPES:
            raise EventFieldError("type", f"must be one of {', '.join(sorted(EVENT_TYPES))}.")
        event.type = event_type
    _set_strings(event, data, _EVENT_STRINGS, "")
    timestamp = data.get("timestamp")
    if timestamp is not None:
        event.timestamp.seconds, event.timestamp.nanos = timestamp_parts(timestamp, "timestamp")
    for name in ("properties", "traits", "partner_attrs"):
        json_object = _object(_get(data, name), camel(name))
        if json_object is not None:
            getattr(event, name).CopyFrom(dict_to_struct(json_object, camel(name)))
    context = _object(data.get("context"), "context")
    if context is not None:
        event.context.CopyFrom(_context(context))
        identity = _object(context.get("traits"), "context.traits")
        if identity is not None:
            _fold_traits(event.traits, dict_to_struct(identity, "context.traits"))
    return event


def _fold_traits(traits: struct_pb2.Struct, identity: struct_pb2.Struct) -> None:
    """Fold an event's ``context.traits`` into its ``traits``; the event's own traits win.

    Segment-style calls carry the visitor's identity in ``context.traits``, which the
    proto's ``Context`` has no field for; the service reads identity from ``traits``. A
    key ``traits`` holds, not null, is kept; any other is taken from ``context.traits``,
    as the gateway and the Node client fold it.
    """
    own = traits.fields
    for key, value in identity.fields.items():
        if key not in own or own[key].WhichOneof("kind") == "null_value":
            own[key].CopyFrom(value)


def _context(data: Mapping[str, Any]) -> pb.Context:
    context = pb.Context()
    _set_strings(context, data, _CONTEXT_STRINGS, "context.")
    for name, fields in _SUBMESSAGES.items():
        sub = _object(data.get(name), f"context.{name}")
        if sub is None:
            continue
        target = getattr(context, name)
        target.SetInParent()
        _set_strings(target, sub, fields, f"context.{name}.")
    session = _object(data.get("session"), "context.session")
    if session is not None:
        context.session.CopyFrom(_session(session))
    vendor_ids = _object(_get(data, "vendor_ids"), "context.vendorIds")
    for key, vendor_id in (vendor_ids or {}).items():
        if not isinstance(vendor_id, str):
            raise EventFieldError(f"context.vendorIds.{key}", not_a_string(vendor_id))
        try:
            context.vendor_ids[vendor_key(str(key))] = vendor_id
        except ValueError:
            field = f"context.vendorIds.{key}"
            raise EventFieldError(field, not_text(str(key), vendor_id)) from None
    consent = data.get("consent")
    if consent is not None:
        context.consent.CopyFrom(consent_from_json(consent, "context.consent"))
    return context


def _session(data: Mapping[str, Any]) -> pb.Session:
    session = pb.Session()
    session_id = data.get("id")
    # A whole number (datafly.js's session ids are epoch milliseconds) is its decimal
    # digits, as in the Node client; up to 2**53 - 1, the most a JavaScript number holds.
    # JSON has one kind of number: 1.0 is the whole number 1, as the Node client (which
    # cannot tell them apart) and the gateway read it.
    if isinstance(session_id, float) and session_id.is_integer():
        session_id = int(session_id)
    if isinstance(session_id, int) and not isinstance(session_id, bool):
        if abs(session_id) > _MAX_SAFE_INTEGER:
            raise EventFieldError("context.session.id", _SESSION_ID_TOO_LARGE)
        session_id = str(session_id)
    if session_id is not None and not isinstance(session_id, str):
        raise EventFieldError(
            "context.session.id",
            f"must be a string or a whole number, not {type_name(session_id)}: "
            "send it as a JSON string.",
        )
    try:
        session.id = session_id or ""
    except ValueError:
        raise EventFieldError("context.session.id", not_text(session_id or "")) from None
    number = data.get("number")
    if number is not None:
        if isinstance(number, float) and number.is_integer():
            number = int(number)
        if isinstance(number, bool) or not isinstance(number, int) or number < 0:
            raise EventFieldError("context.session.number", "must be a whole number, 0 or more.")
        # Past 2**53 - 1 a JavaScript number is not exact: the Node client and the gateway
        # refuse it (this client took up to int64's).
        if number > _MAX_SAFE_INTEGER:
            raise EventFieldError("context.session.number", _SESSION_NUMBER_TOO_LARGE)
        session.number = number
    return session


def consent_from_json(data: Any, field: str = "consent") -> pb.Consent:
    """A consent state in the nested shape events carry, as the proto ``Consent``.

    Args:
        data: ``analytics``, ``marketing`` and ``functional`` (true or false),
            ``categories`` (CMP code → true or false) and ``google`` (Consent Mode v2
            signals, snake_case or camelCase, ``"granted"`` or ``"denied"``; snake_case
            is read first when both are sent); absent or
            ``None`` fields stay absent, which Amperity reads as "no consent given".
        field: The path errors name the state by, e.g. ``context.consent``.

    Raises:
        EventFieldError: A ``ValueError`` naming the first field of a wrong type or value.
    """
    state = _object(data, field)
    if state is None:
        raise EventFieldError(
            field, 'must be a JSON object such as {"analytics": true}; {} means no consent given.'
        )
    consent = pb.Consent()
    for name in ("analytics", "marketing", "functional"):
        flag = state.get(name)
        if flag is None:
            continue
        if not isinstance(flag, bool):
            raise EventFieldError(f"{field}.{name}", "must be true or false.")
        setattr(consent, name, flag)
    categories = _object(state.get("categories"), f"{field}.categories")
    for code, granted in (categories or {}).items():
        if not isinstance(granted, bool):
            raise EventFieldError(f"{field}.categories.{code}", "must be true or false.")
        try:
            consent.categories[str(code)] = granted
        except ValueError:
            raise EventFieldError(f"{field}.categories.{code}", not_text(str(code))) from None
    google = _object(state.get("google"), f"{field}.google")
    if google is not None:
        consent.google.SetInParent()
        for name in _GOOGLE_FIELDS:
            # Consent Mode's own spelling (ad_storage, the spec's) is read first, the
            # camelCase alias after it, as the gateway reads them (gateway/fieldnames.py).
            mode = google.get(name)
            if mode is None:
                mode = google.get(camel(name))
            if mode is None:
                continue
            if not isinstance(mode, str) or mode not in GOOGLE_CONSENT_VALUES:
                raise EventFieldError(f"{field}.google.{name}", 'must be "granted" or "denied".')
            setattr(consent.google, name, mode)
    return consent


def dict_to_struct(data: Mapping[str, Any], field: str = "struct") -> struct_pb2.Struct:
    """A JSON object as a ``Struct``.

    Raises:
        EventFieldError: Naming the first value JSON cannot carry (NaN, a set…).
    """
    struct = struct_pb2.Struct()
    for key, value in data.items():
        if not isinstance(key, str):
            raise EventFieldError(field, f"keys must be strings, not {type(key).__name__}.")
        try:
            target = struct.fields[key]
        except ValueError:
            raise EventFieldError(f"{field}.{key}", not_text(key)) from None
        _set_value(target, value, f"{field}.{key}")
    return struct


def _set_value(target: struct_pb2.Value, value: Any, field: str) -> None:
    if value is None:
        target.null_value = struct_pb2.NULL_VALUE
    elif isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:
            # A whole number of more than 308 digits, which a double cannot hold.
            raise EventFieldError(
                field, "is too large for a JSON number (a double); send it as a string."
            ) from None
        if not math.isfinite(number):
            raise EventFieldError(field, "must be a finite number (JSON has no NaN or Infinity).")
        target.number_value = number
    elif isinstance(value, str):
        try:
            target.string_value = value
        except ValueError:
            raise EventFieldError(field, not_text(value)) from None
    elif isinstance(value, Mapping):
        target.struct_value.CopyFrom(dict_to_struct(value, field))
    elif isinstance(value, list | tuple):
        target.list_value.Clear()
        for index, item in enumerate(value):
            _set_value(target.list_value.values.add(), item, f"{field}[{index}]")
    else:
        raise EventFieldError(field, f"is a {type(value).__name__}, which JSON cannot carry.")


def struct_to_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    """A ``Struct`` as a plain dict; whole numbers come back as ``int``."""
    return {key: value_to_python(value) for key, value in struct.fields.items()}


def value_to_python(value: struct_pb2.Value) -> Any:
    """One ``Struct`` value as plain Python."""
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        number = value.number_value
        return int(number) if number.is_integer() and abs(number) < 2**53 else number
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return struct_to_dict(value.struct_value)
    if kind == "list_value":
        return [value_to_python(item) for item in value.list_value.values]
    return None
