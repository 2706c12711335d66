"""Input limits and required fields for incoming events, each violation naming its field.

The documented limits (README, "Input limits"):

- ``type`` is one of track, page, identify, screen, group, alias; ``anonymous_id`` is set,
  at most ``MAX_ANONYMOUS_ID`` characters (as everywhere an anonymous id arrives);
  ``canonical_id`` at most ``MAX_CANONICAL_ID``; neither, nor ``message_id``, holds a
  control character (``limits.control_character_problem``).
- ``properties``, ``traits`` and ``partner_attrs``: at most ``MAX_KEYS`` keys at any level,
  at most ``MAX_DEPTH`` levels of nesting, at most ``MAX_NODES`` values in all.
- Every string (keys included) at most ``MAX_STRING`` characters.
- ``timestamp`` between 2000-01-01 and 2100-01-01 when set.
- Google consent signals (``context.consent.google.*``) are "granted" or "denied" when set.
- Numbers are finite (JSON has no NaN or Infinity).
- The whole gRPC message at most ``[server] max_message_bytes`` (default 1 MiB).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from google.protobuf import struct_pb2

from amperity_signal.errors import FieldViolation, InvalidEvent
from amperity_signal.limits import (
    ANONYMOUS_ID_REQUIRED,
    ANONYMOUS_ID_TOO_LONG,
    CANONICAL_ID_TOO_LONG,
    MAX_ANONYMOUS_ID,
    MAX_CANONICAL_ID,
    control_character_problem,
)
from amperity_signal.service.convert import STRUCT_FIELDS, event_to_dict
from datafly.amperity.v1 import amperity_service_pb2 as pb

EVENT_TYPES = ("track", "page", "identify", "screen", "group", "alias")
GOOGLE_CONSENT_VALUES = frozenset({"granted", "denied"})
MAX_KEYS = 256
MAX_DEPTH = 10
MAX_NODES = 5_000
MAX_STRING = 8_192
DEFAULT_MAX_BYTES = 1_048_576
CATEGORY_CODE_TOO_LONG = (
    f"has a code longer than {MAX_STRING} characters; send the consent platform's short "
    "category codes (such as C0002), not their descriptions."
)
_MIN_SECONDS = 946_684_800  # 2000-01-01T00:00:00Z
_MAX_SECONDS = 4_102_444_800  # 2100-01-01T00:00:00Z
# anonymous_id and canonical_id have their own, shorter limits (limits.py).
_STRING_FIELDS = ("message_id", "event", "user_id")


def checked_event_dict(
    event: pb.Event,
    max_bytes: int = DEFAULT_MAX_BYTES,
    *,
    message_id: str = "",
    received_at: datetime | None = None,
    context: bool = True,
) -> dict[str, Any]:
    """``event_to_dict`` of a valid event; InvalidEvent exactly as ``validate_event`` raises it.

    ``message_id``, ``received_at`` and ``context`` are passed to ``event_to_dict`` (the
    context is validated either way).

    One walk over the Structs instead of two (validation, then conversion: a quarter of an
    Enrich hit's Python time): they are converted by a walker that checks the limits on
    the way, and only when it meets a violation does ``validate_event`` walk again to name
    every one of them.
    """
    try:
        validate_event(event, max_bytes=max_bytes, structs=False)
        return event_to_dict(
            event, _checked_struct, message_id=message_id, received_at=received_at, context=context
        )
    except (InvalidEvent, _OverLimit):
        validate_event(event, max_bytes=max_bytes)  # raises, naming every violation at once
    # The walker and validate_event check the same limits; should they ever disagree, the
    # validator's judgement stands and the event is converted as it is.
    return event_to_dict(event, message_id=message_id, received_at=received_at, context=context)


class _OverLimit(Exception):
    """A Struct breaks a limit: ``validate_event`` will say where."""


def _checked_struct(struct: struct_pb2.Struct) -> dict[str, Any]:
    return _checked_fields(struct, 1, [MAX_NODES])


def _checked_fields(struct: struct_pb2.Struct, depth: int, budget: list[int]) -> dict[str, Any]:
    """``struct_to_dict`` checking ``_walk_struct``'s limits (``budget``: nodes left)."""
    fields = struct.fields
    if depth > MAX_DEPTH or len(fields) > MAX_KEYS:
        raise _OverLimit
    out: dict[str, Any] = {}
    for key in fields:
        if len(key) > MAX_STRING:
            raise _OverLimit
        value = fields[key]
        if value.HasField("string_value"):  # most values: _checked_value's string case inline
            budget[0] -= 1
            text = value.string_value
            if budget[0] < 0 or len(text) > MAX_STRING:
                raise _OverLimit
            out[key] = text
        else:
            out[key] = _checked_value(value, depth, budget)
    return out


def _checked_value(value: struct_pb2.Value, depth: int, budget: list[int]) -> Any:
    """``value_to_python`` checking ``_walk_value``'s limits."""
    budget[0] -= 1
    if budget[0] < 0:
        raise _OverLimit
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        text = value.string_value
        if len(text) > MAX_STRING:
            raise _OverLimit
        return text
    if kind == "number_value":
        number = value.number_value
        if not math.isfinite(number):
            raise _OverLimit
        return int(number) if number.is_integer() and abs(number) < 2**53 else number
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return _checked_fields(value.struct_value, depth + 1, budget)
    if kind == "list_value":
        if depth + 1 > MAX_DEPTH:
            raise _OverLimit
        return [_checked_value(item, depth + 1, budget) for item in value.list_value.values]
    return None


def validate_event(
    event: pb.Event,
    prefix: str = "event",
    max_bytes: int = DEFAULT_MAX_BYTES,
    *,
    structs: bool = True,
) -> None:
    """Raise InvalidEvent listing every violation of the limits above.

    ``structs=False`` leaves properties, traits and partner_attrs to the caller
    (``checked_event_dict`` checks them while converting).
    """
    violations: list[FieldViolation] = []
    size = event.ByteSize()
    if size > max_bytes:
        # Checked here rather than by gRPC's own receive limit, whose RESOURCE_EXHAUSTED
        # carries no field and reads as retryable to clients.
        raise InvalidEvent(
            [
                FieldViolation(
                    prefix,
                    f"is {size} bytes; at most {max_bytes} are accepted ([server] "
                    "max_message_bytes): drop or shorten the largest properties or traits.",
                )
            ]
        )
    _check_visitor_ids(event, prefix, violations)
    kind = event.type  # each read of a proto string field makes a new str
    if not kind:
        violations.append(
            FieldViolation(f"{prefix}.type", f"is required: one of {', '.join(EVENT_TYPES)}.")
        )
    elif kind not in EVENT_TYPES:
        violations.append(
            FieldViolation(
                f"{prefix}.type", f"{kind[:40]!r} is not one of {', '.join(EVENT_TYPES)}."
            )
        )
    if kind == "track" and not event.event:
        violations.append(FieldViolation(f"{prefix}.event", "a track event needs a name."))
    # A string of more than MAX_STRING characters takes more than MAX_STRING bytes on the
    # wire, so in an event no larger than that no string can be too long.
    strings_fit = size <= MAX_STRING
    for name in () if strings_fit else _STRING_FIELDS:
        if len(getattr(event, name)) > MAX_STRING:
            violations.append(FieldViolation(f"{prefix}.{name}", _too_long()))
    if event.HasField("timestamp") and not (
        _MIN_SECONDS <= event.timestamp.seconds < _MAX_SECONDS
        and 0 <= event.timestamp.nanos < 1_000_000_000
    ):
        nanos = event.timestamp.nanos
        violations.append(
            nanos_violation(f"{prefix}.timestamp", nanos)
            if not 0 <= nanos < 1_000_000_000
            else FieldViolation(
                f"{prefix}.timestamp", "must lie between 2000-01-01 and 2100-01-01 (UTC)."
            )
        )
    for name in STRUCT_FIELDS if structs else ():
        if event.HasField(name):
            _check_struct(getattr(event, name), f"{prefix}.{name}", violations)
    if event.HasField("context"):
        _check_context(event.context, f"{prefix}.context", violations, strings_fit=strings_fit)
    if violations:
        raise InvalidEvent(violations[:20])


def _check_visitor_ids(event: pb.Event, prefix: str, out: list[FieldViolation]) -> None:
    """The ids' own limits (``amperity_signal.limits``): lengths, and no control character."""
    anonymous_id = event.anonymous_id  # each read of a proto string field makes a new str
    if not anonymous_id or len(anonymous_id) > MAX_ANONYMOUS_ID:
        out.append(_anonymous_id_violation(anonymous_id, prefix))
    canonical_id = event.canonical_id
    if len(canonical_id) > MAX_CANONICAL_ID:
        out.append(FieldViolation(f"{prefix}.canonical_id", CANONICAL_ID_TOO_LONG))
    message_id = event.message_id
    if (anonymous_id + canonical_id + message_id).isprintable():
        return  # every hit's case, one C call: no id holds a control character
    ids = (anonymous_id, canonical_id, message_id)
    for name, value in zip(("anonymous_id", "canonical_id", "message_id"), ids, strict=True):
        if problem := control_character_problem(value):
            out.append(FieldViolation(f"{prefix}.{name}", problem))


def anonymous_id_violations(anonymous_id: str) -> list[FieldViolation]:
    """Why a visitor's ``anonymous_id`` (BrowserProfile, RecordConsent) cannot be taken.

    Capped as an event's is (it becomes a lookup value sent to Amperity), and printable;
    empty when it can be (an empty one included: each RPC says whether it needs one).
    """
    if len(anonymous_id) > MAX_ANONYMOUS_ID:
        return [FieldViolation("anonymous_id", ANONYMOUS_ID_TOO_LONG)]
    if problem := control_character_problem(anonymous_id):
        return [FieldViolation("anonymous_id", problem)]
    return []


def _anonymous_id_violation(anonymous_id: str, prefix: str) -> FieldViolation:
    """Why an event's anonymous_id, missing or over ``MAX_ANONYMOUS_ID``, cannot be delivered."""
    if not anonymous_id:
        return FieldViolation(f"{prefix}.anonymous_id", ANONYMOUS_ID_REQUIRED)
    return FieldViolation(f"{prefix}.anonymous_id", ANONYMOUS_ID_TOO_LONG)


def _check_context(
    context: pb.Context, prefix: str, out: list[FieldViolation], *, strings_fit: bool = False
) -> None:
    """The context's limits; ``strings_fit``: the event is too small for a string to be too long."""
    for field, value in () if strings_fit else context.ListFields():
        if isinstance(value, str) and len(value) > MAX_STRING:
            out.append(FieldViolation(f"{prefix}.{field.name}", _too_long()))
    if len(context.vendor_ids) > MAX_KEYS:
        out.append(FieldViolation(f"{prefix}.vendor_ids", f"has more than {MAX_KEYS} entries."))
    for key, value in () if strings_fit else context.vendor_ids.items():
        if len(key) > MAX_STRING or len(value) > MAX_STRING:
            out.append(FieldViolation(f"{prefix}.vendor_ids.{key[:40]}", _too_long()))
    for name in () if strings_fit else ("page", "campaign", "geo", "device"):
        sub = getattr(context, name)
        for field, value in sub.ListFields():
            if isinstance(value, str) and len(value) > MAX_STRING:
                out.append(FieldViolation(f"{prefix}.{name}.{field.name}", _too_long()))
    if context.HasField("consent"):  # most events: nothing more to check
        out.extend(consent_violations(context.consent, f"{prefix}.consent", strings_fit))


def consent_violations(
    consent: pb.Consent, prefix: str = "consent", strings_fit: bool = False
) -> list[FieldViolation]:
    """Why a consent state cannot be kept, each naming its field under ``prefix``.

    Deliver's events and RecordConsent are held to the same limits: a state held through a
    cache outage is as large as its category codes (consent_pending). ``strings_fit``: the
    event is too small for a code to be too long.
    """
    out: list[FieldViolation] = []
    if len(consent.categories) > MAX_KEYS:
        out.append(FieldViolation(f"{prefix}.categories", f"has more than {MAX_KEYS} entries."))
    codes = () if strings_fit else consent.categories
    if any(len(code) > MAX_STRING for code in codes):
        out.append(FieldViolation(f"{prefix}.categories", CATEGORY_CODE_TOO_LONG))
    for field, value in consent.google.ListFields():
        if value not in GOOGLE_CONSENT_VALUES:
            # The blueprint forwards only these two: anything else would vanish silently
            # from the consent Amperity sees (the gateway and the clients refuse it too).
            out.append(
                FieldViolation(
                    f"{prefix}.google.{field.name}",
                    f'{value[:40]!r} is not Google Consent Mode\'s "granted" or "denied"; '
                    "send one of those, or leave the signal unset.",
                )
            )
    return out


def _check_struct(struct: struct_pb2.Struct, prefix: str, out: list[FieldViolation]) -> None:
    nodes = [0]
    _walk_struct(struct, prefix, 1, nodes, out)
    if nodes[0] > MAX_NODES:
        out.append(FieldViolation(prefix, f"holds more than {MAX_NODES} values in all."))


def _walk_struct(
    struct: struct_pb2.Struct, path: str, depth: int, nodes: list[int], out: list[FieldViolation]
) -> None:
    if depth > MAX_DEPTH:
        out.append(FieldViolation(path, f"is nested deeper than {MAX_DEPTH} levels."))
        return
    if len(struct.fields) > MAX_KEYS:
        out.append(FieldViolation(path, f"has more than {MAX_KEYS} keys."))
        return
    for key, value in struct.fields.items():
        if len(key) > MAX_STRING:
            out.append(FieldViolation(path, f"has a key longer than {MAX_STRING} characters."))
            continue
        _walk_value(value, f"{path}.{key}", depth, nodes, out)


def _walk_value(
    value: struct_pb2.Value, path: str, depth: int, nodes: list[int], out: list[FieldViolation]
) -> None:
    nodes[0] += 1
    if nodes[0] > MAX_NODES or len(out) >= 20:
        return
    kind = value.WhichOneof("kind")
    if kind == "string_value" and len(value.string_value) > MAX_STRING:
        out.append(FieldViolation(path, _too_long()))
    elif kind == "number_value" and not math.isfinite(value.number_value):
        out.append(FieldViolation(path, "is NaN or Infinity, which JSON cannot carry."))
    elif kind == "struct_value":
        _walk_struct(value.struct_value, path, depth + 1, nodes, out)
    elif kind == "list_value":
        if depth + 1 > MAX_DEPTH:
            out.append(FieldViolation(path, f"is nested deeper than {MAX_DEPTH} levels."))
            return
        for index, item in enumerate(value.list_value.values):
            _walk_value(item, f"{path}[{index}]", depth + 1, nodes, out)


def nanos_violation(field: str, nanos: int) -> FieldViolation:
    """A Timestamp whose ``nanos`` is out of range, named as ``<field>.nanos``.

    A date-range message answered it, though the seconds may be fine: the fix is the
    fraction, which protobuf's Timestamp keeps in 0..999999999, never negative.
    """
    return FieldViolation(
        f"{field}.nanos",
        f"must be 0..999999999 (the fraction of a second after seconds, never negative), "
        f"not {nanos}: write 0.5 s before a whole second as the second before it and "
        "500000000 nanos, as Timestamp.FromDatetime does.",
    )


def _too_long() -> str:
    return f"is longer than {MAX_STRING} characters."
