"""Datafly's camelCase event JSON → the proto ``Event``, validating every known field.

Unknown keys are ignored (Datafly events carry extras such as ``context.library``); a
known key with the wrong type is refused with 400 naming the field. ``null`` means absent,
and absent consent fields stay absent (proto3 ``optional``). Facts only the server can
know — the client IP, the user agent, the ``_dfid`` cookie — come from ``RequestFacts``.
``context.traits``, Segment-style identity the proto's ``Context`` has no field for, is
folded into the event's ``traits`` (``fold_context_traits``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.protobuf import struct_pb2, timestamp_pb2

from amperity_signal import rfc3339
from amperity_signal.casing import camel_to_snake
from amperity_signal.gateway.errors import GatewayError, InvalidFieldError
from amperity_signal.gateway.fieldnames import (
    CONSENT_FLAGS,
    CONSENT_REQUEST_FIELDS,
    CONTEXT,
    CONTEXT_TRAITS,
    EVENT_FIELDS,
    GOOGLE,
    SENT_AT,
    SUBMESSAGES,
)
from amperity_signal.gateway.jsonbody import check_value
from amperity_signal.limits import (
    ANONYMOUS_ID_REQUIRED,
    ANONYMOUS_ID_TOO_LONG,
    CANONICAL_ID_TOO_LONG,
    MAX_ANONYMOUS_ID,
    MAX_CANONICAL_ID,
    control_character_problem,
)
from datafly.amperity.v1 import amperity_service_pb2 as pb

EVENT_TYPES = frozenset({"track", "page", "identify", "screen", "group", "alias"})
_GOOGLE_VALUES = frozenset({"granted", "denied"})
ANONYMOUS_ID_COOKIE = "_dfid"
_MAX_SAFE_INTEGER = 2**53 - 1
_SESSION_ID_TOO_LARGE = (
    "is a whole number too large to be exact in JavaScript (over 2**53 - 1): "
    "send it as a JSON string."
)


# The names the converter reads each field by, looked up once per field.
_EVENT_NAMES = {name: spec.names for name, spec in EVENT_FIELDS.items()}
_CONTEXT_NAMES = {name: spec.names for name, spec in CONTEXT.items()}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DAY = 86_400
_NANOS = 1_000_000_000


@dataclass(frozen=True)
class PageClock:
    """A request's ``sentAt`` and its receive time, to put the page's instants on our clock.

    An instant the page stamped (an event's ``timestamp``, a ``consentedAt``) counts as
    received less its age on the page's own clock, ``received - (sent - instant)``
    (Segment's clock-skew correction): however far the page's clock is off, the offset
    cancels out. A consent state's ``at`` in the ledger comes from these instants: taken
    as stamped, a grant from a page clock 10 minutes ahead, sent before a withdrawal but
    retried after it, counted as newer and undid it. A negative age (an instant after
    ``sentAt``, which one clock does not give) counts as 0: received now, never later. A
    huge one is kept, and the service judges the instant it gives as it judges one sent
    without ``sentAt`` (an event's outside 2000-2100, a ``consentedAt`` before 2000: a 400
    naming it). Time on the wire is not in the age, so it still counts towards newer.

    Attributes:
        sent: ``sentAt`` in epoch nanoseconds, by the page's clock.
        received: The receive time in epoch nanoseconds, by the gateway's clock.
    """

    sent: int
    received: int

    def corrected(self, seconds: int, nanos: int) -> tuple[int, int]:
        """The page's instant ``(seconds, nanos)`` on the gateway's clock, as the same parts."""
        age = self.sent - (seconds * _NANOS + nanos)
        return divmod(self.received - age if age > 0 else self.received, _NANOS)


def page_clock(sent: int | None, now: datetime) -> PageClock | None:
    """The ``PageClock`` of a request that carried ``sentAt`` (epoch ns), received ``now``."""
    if sent is None:
        return None
    seconds, nanos = _receive_time(now)
    return PageClock(sent, seconds * _NANOS + nanos)


def sent_at_from_json(data: Any, code: str) -> int | None:
    """A body's ``sentAt`` (or ``sent_at``) in epoch nanoseconds; None when absent or null.

    Read as an event's ``timestamp`` is (``rfc3339``); a body that is not an object has
    none (its own check refuses it).

    Raises:
        GatewayError: 400 ``code`` naming the field as sent, when it is not RFC 3339.
    """
    if not isinstance(data, dict):
        return None
    name = SENT_AT[0]
    value = data.get(name)
    if value is None:
        name = SENT_AT[1]
        value = data.get(name)
        if value is None:
            return None
    try:
        seconds, nanos = rfc3339.timestamp_parts(value)
    except rfc3339.TimestampError as error:
        raise GatewayError(400, code, f"{name}: {error}", field=name) from None
    return seconds * _NANOS + nanos


@dataclass(frozen=True)
class RequestFacts:
    """What the gateway knows about the HTTP request an event arrived on.

    Attributes:
        default_type: The event type implied by the route (``/v1/t`` → ``track``).
        ip: The client IP address.
        user_agent: The ``User-Agent`` header, or None when absent.
        cookie_anonymous_id: The ``_dfid`` cookie, used when the event has no anonymousId.
        now: The receive time, used when the event has no timestamp.
        new_message_id: Makes a messageId for events that have none.
        clock: The request's ``sentAt`` and receive time when it carried ``sentAt``: an
            event's timestamp is then put on the gateway's clock (``PageClock``).
    """

    default_type: str
    ip: str
    user_agent: str | None
    cookie_anonymous_id: str | None
    now: datetime
    new_message_id: Callable[[], str]
    clock: PageClock | None = None


def _get(data: Mapping[str, Any], names: tuple[str, ...]) -> Any:
    return next((data[n] for n in names if data.get(n) is not None), None)


def _sent(data: Mapping[str, Any], names: tuple[str, ...]) -> str:
    """The one of ``names`` that ``_get`` read: a refusal names the field as the body spelled it.

    Asked only once a value is refused, so an accepted event pays nothing for it.
    """
    return next(n for n in names if data.get(n) is not None)


def _string(data: Mapping[str, Any], names: tuple[str, ...], path: str) -> str | None:
    value = _get(data, names)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidFieldError(f"{path}{_sent(data, names)}", "must be a string.")
    return value


def _id_string(data: Mapping[str, Any], names: tuple[str, ...], path: str) -> str | None:
    """``_string`` of an id, which holds no control character (as Deliver refuses one)."""
    value = _string(data, names, path)
    if value and (problem := control_character_problem(value)):
        raise InvalidFieldError(f"{path}{_sent(data, names)}", problem)
    return value


def _object(value: Any, field: str) -> Mapping[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidFieldError(field, "must be a JSON object.")
    return value


def _object_at(
    data: Mapping[str, Any], names: tuple[str, ...], path: str
) -> Mapping[str, Any] | None:
    """``_object`` of a field read by ``names``, refused by the one the body used."""
    value = _get(data, names)
    if value is None or isinstance(value, dict):
        return value
    raise InvalidFieldError(f"{path}{_sent(data, names)}", "must be a JSON object.")


def _struct(value: Any, field: str) -> struct_pb2.Struct | None:
    data = _object(value, field)
    if data is None:
        return None
    check_value(data, field)
    struct = struct_pb2.Struct()
    struct.update(data)
    return struct


def _timestamp(value: Any, field: str) -> tuple[int, int]:
    """An RFC 3339 date-time string as a Timestamp's (seconds, nanos); no offset means UTC.

    The clients' grammar (``amperity_signal.rfc3339``): what they refuse is a 400 here too,
    in their words, naming ``field``. The caller sets the parts on its own Timestamp
    (building one and ``CopyFrom`` costs ~3x the two assignments; ``FromDatetime`` ~8x).
    """
    try:
        return rfc3339.timestamp_parts(value)
    except rfc3339.TimestampError as error:
        raise InvalidFieldError(field, str(error)) from None


def _receive_time(now: datetime) -> tuple[int, int]:
    """The receive time as a Timestamp's (seconds, nanos), the parts ``FromDatetime`` sets.

    The same instant to the microsecond (naive means UTC, as there) for a third of the
    instructions: ``FromDatetime`` is pure Python around ``calendar.timegm``
    (docs/benchmarks.md, the ``receive`` layer).
    """
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    delta = now - _EPOCH
    return delta.days * _DAY + delta.seconds, delta.microseconds * 1000


def event_from_json(data: Any, facts: RequestFacts, prefix: str = "") -> pb.Event:
    """Convert one Datafly event (parsed JSON) to the proto Event.

    Args:
        data: The parsed JSON of one event.
        facts: The request it arrived on.
        prefix: Prepended to field names in errors, e.g. ``batch[2].``.

    Raises:
        InvalidFieldError: Naming the first field with a wrong type or value.
    """
    if not isinstance(data, dict):
        raise InvalidFieldError(prefix.rstrip(".") or "body", "an event must be a JSON object.")
    if _get(data, partner_attrs := _EVENT_NAMES["partner_attrs"]) is not None:
        raise InvalidFieldError(
            f"{prefix}{_sent(data, partner_attrs)}", "is attached server-side; do not send it."
        )
    event = pb.Event()
    event_type = _string(data, _EVENT_NAMES["type"], prefix) or facts.default_type
    if event_type not in EVENT_TYPES:
        raise InvalidFieldError(
            f"{prefix}type", f"must be one of {', '.join(sorted(EVENT_TYPES))}."
        )
    event.type = event_type
    event.event = _string(data, _EVENT_NAMES["event"], prefix) or ""
    message_id = _id_string(data, _EVENT_NAMES["message_id"], prefix)
    event.message_id = message_id or facts.new_message_id()
    event.anonymous_id = _anonymous_id(data, facts, prefix)
    event.user_id = _string(data, _EVENT_NAMES["user_id"], prefix) or ""
    event.canonical_id = _canonical_id(data, prefix)
    if not event.anonymous_id:
        # Deliver's rule, in its words (the cookieid is always present): a userId alone,
        # let through here, would only be refused there.
        raise InvalidFieldError(f"{prefix}anonymousId", ANONYMOUS_ID_REQUIRED)
    event.timestamp.seconds, event.timestamp.nanos = _event_time(data, facts, prefix)
    for name in ("properties", "traits"):
        struct = _struct(data.get(name), f"{prefix}{name}")
        if struct is not None:
            getattr(event, name).CopyFrom(struct)
    context = data.get("context")
    event.context.CopyFrom(_context(context, facts, f"{prefix}context."))
    # _context refused a context that is not an object (nor null), so this is one: an
    # event without context.traits pays one get for them.
    if context is not None and (identity := context.get(CONTEXT_TRAITS)) is not None:
        fold_context_traits(event.traits, _struct(identity, f"{prefix}context.traits"))
    return event


def fold_context_traits(traits: struct_pb2.Struct, identity: struct_pb2.Struct | None) -> None:
    """Fold an event's ``context.traits`` into its ``traits``; the event's own traits win.

    Segment-style calls carry the visitor's identity (email, phone, names) in
    ``context.traits``, which the proto's ``Context`` has no field for: the blueprint's
    identity mappings and linking-key resolution read ``traits``. A key ``traits`` holds,
    not null, is kept; any other is taken from ``context.traits``. The clients fold alike
    (``clients/testdata/context_traits.json`` holds the cases all three run).
    """
    if identity is None:
        return
    own = traits.fields
    for key, value in identity.fields.items():
        if key not in own or own[key].WhichOneof("kind") == "null_value":
            own[key].CopyFrom(value)


def _anonymous_id(data: dict[str, Any], facts: RequestFacts, prefix: str) -> str:
    """The event's ``anonymousId``, else the request's ``_dfid`` cookie; at most 200 long."""
    anonymous_id = _id_string(data, names := _EVENT_NAMES["anonymous_id"], prefix)
    if anonymous_id:
        if len(anonymous_id) > MAX_ANONYMOUS_ID:
            raise InvalidFieldError(f"{prefix}{_sent(data, names)}", ANONYMOUS_ID_TOO_LONG)
        return anonymous_id
    anonymous_id = facts.cookie_anonymous_id
    if anonymous_id:
        # The request's cookie, not a field of this event: named as the cookie.
        problem = control_character_problem(anonymous_id)
        if len(anonymous_id) > MAX_ANONYMOUS_ID or problem:
            raise InvalidFieldError(ANONYMOUS_ID_COOKIE, problem or ANONYMOUS_ID_TOO_LONG)
    return anonymous_id or ""


def _canonical_id(data: dict[str, Any], prefix: str) -> str:
    """The event's ``canonicalId``, at most ``MAX_CANONICAL_ID`` long; "" when not sent."""
    canonical_id = _id_string(data, names := _EVENT_NAMES["canonical_id"], prefix) or ""
    if len(canonical_id) > MAX_CANONICAL_ID:
        raise InvalidFieldError(f"{prefix}{_sent(data, names)}", CANONICAL_ID_TOO_LONG)
    return canonical_id


def _event_time(data: dict[str, Any], facts: RequestFacts, prefix: str) -> tuple[int, int]:
    """The event's ``timestamp`` (on the gateway's clock with ``sentAt``), else the receive time."""
    timestamp = data.get("timestamp")
    if timestamp is None:
        return _receive_time(facts.now)
    parts = _timestamp(timestamp, f"{prefix}timestamp")
    return parts if facts.clock is None else facts.clock.corrected(*parts)


def _context(value: Any, facts: RequestFacts, path: str) -> pb.Context:
    data = _object(value, path.rstrip(".")) or {}
    context = pb.Context()
    # The IP always comes from the connection: a page cannot claim someone else's.
    context.ip = facts.ip
    body_agent = _string(data, _CONTEXT_NAMES["user_agent"], path)
    context.user_agent = facts.user_agent or body_agent or ""
    context.locale = _string(data, _CONTEXT_NAMES["locale"], path) or ""
    context.timezone = _string(data, _CONTEXT_NAMES["timezone"], path) or ""
    for name, fields in SUBMESSAGES.items():
        sub = _object(data.get(name), f"{path}{name}")
        if sub is None:
            continue
        target = getattr(context, name)
        target.SetInParent()
        for proto_name, spec in fields.items():
            text = _string(sub, spec.names, f"{path}{name}.")
            if text is not None:
                setattr(target, proto_name, text)
    session = _object(data.get("session"), f"{path}session")
    if session is not None:
        context.session.CopyFrom(_session(session, f"{path}session."))
    vendor_names = _CONTEXT_NAMES["vendor_ids"]
    vendor_ids = _object_at(data, vendor_names, path)
    for key, vendor_id in (vendor_ids or {}).items():
        if not isinstance(vendor_id, str):
            sent = _sent(data, vendor_names)
            raise InvalidFieldError(f"{path}{sent}.{key}", "must be a string.")
        # In snake_case, as the proto and the blueprint's global mappings name them
        # (``fieldnames.CONTEXT``, which names a refused key back as the body sent it).
        context.vendor_ids[camel_to_snake(key)] = vendor_id
    consent = _object(data.get("consent"), f"{path}consent")
    if consent is not None:
        context.consent.CopyFrom(_consent(consent, f"{path}consent."))
    return context


def _session(data: Mapping[str, Any], path: str) -> pb.Session:
    """The session, read as both clients read it (tests/unit/test_event_conversion_parity.py)."""
    session = pb.Session()
    session_id = data.get("id")
    # A whole number (datafly.js's session ids are epoch milliseconds) is its digits, up to
    # 2**53 - 1: past it a JavaScript number is not exact, so 2**53 may have been 2**53 + 1.
    # 1.0 is the whole number 1, as for the number below and in both clients.
    if isinstance(session_id, float) and session_id.is_integer():
        session_id = int(session_id)
    if isinstance(session_id, int) and not isinstance(session_id, bool):
        if abs(session_id) > _MAX_SAFE_INTEGER:
            raise InvalidFieldError(f"{path}id", _SESSION_ID_TOO_LARGE)
        session_id = str(session_id)
    if session_id is not None and not isinstance(session_id, str):
        raise InvalidFieldError(f"{path}id", "must be a string or a whole number.")
    session.id = session_id or ""
    number = data.get("number")
    if number is not None:
        # JSON has one kind of number: 3.0 is the whole number 3 (as in JavaScript, and
        # as the OpenAPI document's "integer" reads it).
        if isinstance(number, float) and number.is_integer():
            number = int(number)
        if isinstance(number, bool) or not isinstance(number, int) or number < 0:
            raise InvalidFieldError(f"{path}number", "must be a whole number, 0 or more.")
        # Past 2**53 - 1 not exact in JavaScript, as the clients refuse it (the body's
        # check refuses an integer past 2**53, not 2**53 itself nor a float).
        if number > _MAX_SAFE_INTEGER:
            raise InvalidFieldError(f"{path}number", "is too large (at most 2**53 - 1).")
        session.number = number
    return session


def consent_from_json(value: Any, field: str = "consent") -> pb.Consent:
    """The consent object of a ``POST /v1/consent`` body, checked as an event's is.

    Raises:
        GatewayError: 400 ``INVALID_CONSENT`` naming the first wrong field.
    """
    if not isinstance(value, Mapping):
        raise GatewayError(
            400,
            "INVALID_CONSENT",
            f"{field}: is required, a JSON object: the visitor's whole consent state, shaped "
            "as an event's context.consent ({} when nothing is granted).",
            field=field,
        )
    try:
        return _consent(value, f"{field}.")
    except InvalidFieldError as error:
        raise GatewayError(400, "INVALID_CONSENT", error.message, field=error.field) from None


def consented_at_from_json(
    data: Mapping[str, Any], clock: PageClock | None = None
) -> timestamp_pb2.Timestamp | None:
    """When the visitor made the choice a ``POST /v1/consent`` body carries, if it says.

    ``consentedAt`` (or ``consented_at``) is an RFC 3339 date-time; absent or null means
    now. With the body's ``sentAt`` (``clock``) it is put on the gateway's clock, as an
    event's timestamp is. How far ahead of its clock it may lie is the service's to judge.

    Raises:
        GatewayError: 400 ``INVALID_CONSENT`` naming the field as sent.
    """
    names = CONSENT_REQUEST_FIELDS["consented_at"].names
    name = next((n for n in names if data.get(n) is not None), None)
    if name is None:
        return None
    try:
        seconds, nanos = _timestamp(data[name], name)
    except InvalidFieldError as error:
        raise GatewayError(400, "INVALID_CONSENT", error.message, field=error.field) from None
    if clock is not None:
        seconds, nanos = clock.corrected(seconds, nanos)
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)


def _consent(data: Mapping[str, Any], path: str) -> pb.Consent:
    consent = pb.Consent()
    for name in CONSENT_FLAGS:
        flag = data.get(name)
        if flag is None:
            continue
        if not isinstance(flag, bool):
            raise InvalidFieldError(f"{path}{name}", "must be true or false.")
        setattr(consent, name, flag)
    categories = _object(data.get("categories"), f"{path}categories")
    for code, granted in (categories or {}).items():
        if not isinstance(granted, bool):
            raise InvalidFieldError(f"{path}categories.{code}", "must be true or false.")
        consent.categories[code] = granted
    google = _object(data.get("google"), f"{path}google")
    if google is not None:
        consent.google.SetInParent()
        for name, spec in GOOGLE.items():
            mode = _get(google, spec.names)
            if mode is None:
                continue
            if not isinstance(mode, str) or mode not in _GOOGLE_VALUES:
                # Named as the body spelled it (adStorage, or Consent Mode's ad_storage).
                sent = _sent(google, spec.names)
                raise InvalidFieldError(f"{path}google.{sent}", 'must be "granted" or "denied".')
            setattr(consent.google, name, mode)
    return consent
