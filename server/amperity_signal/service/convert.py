"""Conversions between the proto ``Event`` and the plain dicts the use cases work on.

Servicers translate protos to plain Python and back; nothing below them sees a proto.
Absent consent fields stay absent (``optional`` fields are read with ``HasField``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from google.protobuf import struct_pb2

from datafly.amperity.v1 import amperity_service_pb2 as pb

_CONTEXT_SCALARS = ("ip", "user_agent", "locale", "timezone")
_SUBMESSAGES: dict[str, tuple[str, ...]] = {
    "page": ("url", "path", "referrer", "title", "search"),
    "campaign": ("source", "medium", "name", "term", "content"),
    "session": ("id", "number"),
    "geo": ("country", "region", "city", "postal_code"),
    "device": ("type", "os", "browser"),
}
_GOOGLE: tuple[
    Literal["ad_storage", "ad_user_data", "ad_personalization", "analytics_storage"], ...
] = ("ad_storage", "ad_user_data", "ad_personalization", "analytics_storage")
STRUCT_FIELDS: tuple[Literal["properties", "traits", "partner_attrs"], ...] = (
    "properties",
    "traits",
    "partner_attrs",
)


def struct_to_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as a plain dict; whole numbers below 2**53 become ints (``1.0`` reads as ``1``)."""
    # By key rather than ``items()``: the map's items view is a Python generator. Most
    # values are strings, for which HasField costs less than value_to_python's WhichOneof.
    fields = struct.fields
    converted: dict[str, Any] = {}
    for key in fields:
        value = fields[key]
        if value.HasField("string_value"):
            converted[key] = value.string_value
        else:
            converted[key] = value_to_python(value)
    return converted


def value_to_python(value: struct_pb2.Value) -> Any:
    """One Struct value as plain Python."""
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


def dict_to_struct(data: dict[str, Any]) -> struct_pb2.Struct:
    """A plain dict as a Struct; non-finite numbers become null (strict JSON)."""
    struct = struct_pb2.Struct()
    fill_struct(struct, data)
    return struct


def fill_struct(struct: struct_pb2.Struct, data: dict[str, Any]) -> None:
    """Set a plain dict's items on a Struct in place (as ``dict_to_struct`` converts them)."""
    fields = struct.fields
    for key, value in data.items():
        if type(value) is str:  # most values: a third cheaper without the call
            fields[key].string_value = value
        else:
            set_value(fields[key], value)


def set_value(target: struct_pb2.Value, value: Any) -> None:
    """Set one plain Python value on a Struct ``Value`` (see ``dict_to_struct``)."""
    if type(value) is str:
        target.string_value = value
    elif value is None:
        target.null_value = struct_pb2.NULL_VALUE
    elif isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            target.null_value = struct_pb2.NULL_VALUE
        else:
            target.number_value = value
    elif isinstance(value, str):
        target.string_value = value
    elif isinstance(value, dict):
        target.struct_value.Clear()
        for key, item in value.items():
            set_value(target.struct_value.fields[str(key)], item)
    elif isinstance(value, list | tuple):
        target.list_value.Clear()
        for item in value:
            set_value(target.list_value.values.add(), item)
    else:
        target.string_value = str(value)


def event_to_dict(
    event: pb.Event,
    struct_converter: Callable[[struct_pb2.Struct], dict[str, Any]] | None = None,
    *,
    message_id: str = "",
    received_at: datetime | None = None,
    context: bool = True,
) -> dict[str, Any]:
    """The proto Event as the blueprint's event dict (empty fields left out).

    ``struct_converter`` converts properties, traits and partner_attrs (``struct_to_dict``
    by default; validation passes one that checks the limits on the way). ``message_id``
    and ``received_at`` stand in for a missing message_id and timestamp (Deliver fills
    both, as the spec's payload always carries them), in the same places.
    ``context=False`` leaves the context out, for a caller that never reads it.
    """
    convert_struct = struct_converter or struct_to_dict
    out: dict[str, Any] = {"message_id": message_id} if message_id else {}
    for name in ("message_id", "type", "event", "anonymous_id", "canonical_id", "user_id"):
        value = getattr(event, name)
        if value:
            out[name] = value
    if not out.get("canonical_id") and out.get("anonymous_id"):
        out["canonical_id"] = out["anonymous_id"]
    if event.HasField("timestamp"):
        out["timestamp"] = event.timestamp.ToDatetime(tzinfo=UTC)
    elif received_at is not None:
        out["timestamp"] = received_at
    for name in STRUCT_FIELDS:
        if event.HasField(name):
            out[name] = convert_struct(getattr(event, name))
    if context and event.HasField("context"):
        out["context"] = context_to_dict(event.context)
    return out


def context_to_dict(context: pb.Context) -> dict[str, Any]:
    """The proto Context as a plain dict; absent parts absent."""
    # ListFields: only the set fields, in field-number order, which is this dict's order
    # (scalars, parts, vendor_ids, consent); proto3 leaves empty strings and zeros out.
    out: dict[str, Any] = {}
    for field, value in context.ListFields():
        name = field.name
        if name in _SUBMESSAGES:
            values = {f.name: v for f, v in value.ListFields()}
            if values:
                out[name] = values
        elif name == "vendor_ids":
            out[name] = dict(value)
        elif name == "consent":
            out[name] = consent_to_dict(value)
        else:
            out[name] = value
    return out


def consent_to_dict(consent: pb.Consent) -> dict[str, Any]:
    """The consent state exactly as given: unset booleans stay absent."""
    out: dict[str, Any] = {}
    for name in ("analytics", "marketing", "functional"):
        if consent.HasField(name):
            out[name] = getattr(consent, name)
    if consent.categories:
        out["categories"] = dict(consent.categories)
    if consent.HasField("google"):
        google = {
            name: getattr(consent.google, name) for name in _GOOGLE if consent.google.HasField(name)
        }
        if google:
            out["google"] = google
    return out


def now_utc() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def dict_to_event(data: dict[str, Any]) -> pb.Event:
    """An event dict (as ``event_to_dict`` makes) back into the proto Event."""
    event = pb.Event()
    for name in ("message_id", "type", "event", "anonymous_id", "canonical_id", "user_id"):
        value = data.get(name)
        if isinstance(value, str):
            setattr(event, name, value)
    timestamp = data.get("timestamp")
    if isinstance(timestamp, datetime):
        event.timestamp.FromDatetime(timestamp)
    for name in ("properties", "traits", "partner_attrs"):
        value = data.get(name)
        if isinstance(value, dict):
            getattr(event, name).CopyFrom(dict_to_struct(value))
    context = data.get("context")
    if isinstance(context, dict):
        event.context.CopyFrom(dict_to_context(context))
    return event


def dict_to_context(data: dict[str, Any]) -> pb.Context:
    """A context dict back into the proto Context."""
    context = pb.Context()
    for name in _CONTEXT_SCALARS:
        if isinstance(data.get(name), str):
            setattr(context, name, data[name])
    for name, fields in _SUBMESSAGES.items():
        sub = data.get(name)
        if isinstance(sub, dict):
            target = getattr(context, name)
            for field in fields:
                if field in sub:
                    setattr(target, field, sub[field])
    vendor_ids = data.get("vendor_ids")
    if isinstance(vendor_ids, dict):
        context.vendor_ids.update({str(k): str(v) for k, v in vendor_ids.items()})
    consent = data.get("consent")
    if isinstance(consent, dict):
        context.consent.CopyFrom(dict_to_consent(consent))
    return context


def dict_to_consent(data: dict[str, Any]) -> pb.Consent:
    """A consent dict back into the proto Consent; absent parts stay unset."""
    consent = pb.Consent()
    for name in ("analytics", "marketing", "functional"):
        if isinstance(data.get(name), bool):
            setattr(consent, name, data[name])
    categories = data.get("categories")
    if isinstance(categories, dict):
        consent.categories.update({str(k): bool(v) for k, v in categories.items()})
    google = data.get("google")
    if isinstance(google, dict):
        for name in _GOOGLE:
            if isinstance(google.get(name), str):
                setattr(consent.google, name, google[name])
    return consent
